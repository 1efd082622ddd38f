//go:build tools

// Package tools pins the upstream Kubernetes and etcd programs that upstream/build.sh builds.
// Nothing here is compiled into Berth: the blank imports only make `go mod tidy` keep the
// modules (and their go.sum lines) that `go build <package>` needs.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
