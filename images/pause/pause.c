/*
 * Berth's pause: PID 1 of every pod sandbox.
 *
 * Holds the pod's namespaces open, reaps any zombie handed to it (SIGCHLD), and exits 0 on
 * SIGINT/SIGTERM (runc's stop). Otherwise it sleeps in pause(). Built with `gcc -static -Os`
 * by images/build.sh; same behaviour as Kubernetes' pause.c, written from that description.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
	(void)sig;
	_exit(0);
}

static void on_child(int sig) {
	(void)sig;
	int saved = errno;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

int main(int argc, char **argv) {
	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("berth-pause 1.0\n");
		return 0;
	}
	if (getpid() != 1) {
		fprintf(stderr, "berth-pause: warning: not running as PID 1\n");
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_term;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
		perror("berth-pause: sigaction");
		return 1;
	}
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL) < 0) {
		perror("berth-pause: sigaction(SIGCHLD)");
		return 2;
	}

	for (;;) {
		pause();
	}
	/* not reached */
	return 42;
}
