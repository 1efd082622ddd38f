//! Container logs for `/containerLogs`: query options (v1.PodLogOptions), the CRI log format parser,
//! and the reader that turns a log file into the response stream.
//!
//! Model: kubelet pkg/kubelet/kuberuntime/logs/logs.go (`ReadLogs`, `parseCRILog`, `logWriter`)
//! and pkg/util/tail (`FindTailLineStartIndex`). One deliberate difference: with timestamps=true a
//! line assembled from partial (`P`) entries carries one timestamp (its first entry's), where
//! kubelet prefixes each fragment.
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// Options of a log request (the subset of v1.PodLogOptions kubelet honours).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines; None = all.
    pub tail_lines: Option<u64>,
    /// Only entries at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Why a query was refused, with kubelet's status code and body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogQueryError {
    /// 400 `{"message": "Unable to decode query."}`
    #[error("{{\"message\": \"Unable to decode query.\"}}")]
    Decode,
    /// 422 `{"message": "Invalid request."}`
    #[error("{{\"message\": \"Invalid request.\"}}")]
    Invalid,
}

/// Go's strconv.ParseBool.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parse the query pairs of a `/containerLogs` request, like kubelet's `getContainerLogs`
/// (legacy `tail` param, parameter decoding, then `ValidatePodLogOptions`).
pub fn parse_log_options(
    pairs: &[(String, String)],
    now: Timestamp,
) -> Result<LogOptions, LogQueryError> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let boolean = |k: &str| match get(k) {
        None | Some("") => Ok(false),
        Some(v) => parse_bool(v).ok_or(LogQueryError::Decode),
    };
    let int = |k: &str| match get(k) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| LogQueryError::Decode),
    };
    let mut tail = int("tailLines")?;
    match get("tail") {
        Some("all") => tail = None,
        Some(t) if !t.is_empty() => {
            tail = Some(t.parse::<i64>().map_err(|_| LogQueryError::Decode)?)
        }
        _ => {}
    }
    let since_seconds = int("sinceSeconds")?;
    let since_time = match get("sinceTime") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<Timestamp>().map_err(|_| LogQueryError::Decode)?),
    };
    let limit = int("limitBytes")?;
    if tail.is_some_and(|t| t < 0)
        || limit.is_some_and(|l| l < 1)
        || since_seconds.is_some_and(|s| s < 1)
        || (since_seconds.is_some() && since_time.is_some())
    {
        return Err(LogQueryError::Invalid);
    }
    let since = match (since_seconds, since_time) {
        (Some(s), _) => Some(now - jiff::SignedDuration::from_secs(s)),
        (None, t) => t,
    };
    Ok(LogOptions {
        follow: boolean("follow")?,
        previous: boolean("previous")?,
        timestamps: boolean("timestamps")?,
        tail_lines: tail.map(|t| t as u64),
        since,
        limit_bytes: limit.map(|l| l as u64),
    })
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLogEntry<'a> {
    /// The timestamp as written (RFC3339Nano).
    pub raw_time: &'a str,
    pub time: Timestamp,
    /// "stdout" or "stderr".
    pub stream: &'a str,
    /// A `P` entry: the line continues in the next entry.
    pub partial: bool,
    /// The content, without the trailing newline.
    pub content: &'a [u8],
}

/// A line the parser rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriLogError {
    #[error("timestamp is not found")]
    NoTimestamp,
    #[error("unexpected timestamp format {0:?}")]
    BadTimestamp(String),
    #[error("stream type is not found")]
    NoStream,
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    #[error("tag is not found")]
    NoTag,
}

/// Parse one line (`<RFC3339Nano> <stdout|stderr> <P|F>[:more tags] <content>`), like kubelet's
/// `parseCRILog`. A trailing newline is ignored.
pub fn parse_cri_line(line: &[u8]) -> Result<CriLogEntry<'_>, CriLogError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let next = |s: &[u8]| s.iter().position(|&b| b == b' ');
    let i = next(line).ok_or(CriLogError::NoTimestamp)?;
    let raw_time = std::str::from_utf8(&line[..i])
        .map_err(|_| CriLogError::BadTimestamp(String::from_utf8_lossy(&line[..i]).into()))?;
    let time = raw_time
        .parse::<Timestamp>()
        .map_err(|_| CriLogError::BadTimestamp(raw_time.to_owned()))?;
    let rest = &line[i + 1..];
    let j = next(rest).ok_or(CriLogError::NoStream)?;
    let stream = match &rest[..j] {
        b"stdout" => "stdout",
        b"stderr" => "stderr",
        other => {
            return Err(CriLogError::BadStream(
                String::from_utf8_lossy(other).into(),
            ))
        }
    };
    let rest = &rest[j + 1..];
    // The tag may be the last field when the content is empty.
    let (tags, content) = match next(rest) {
        Some(k) => (&rest[..k], &rest[k + 1..]),
        None if !rest.is_empty() => (rest, &b""[..]),
        None => return Err(CriLogError::NoTag),
    };
    let first_tag = tags.split(|&b| b == b':').next().unwrap_or(b"");
    Ok(CriLogEntry {
        raw_time,
        time,
        stream,
        partial: first_tag == b"P",
        content,
    })
}

/// kubelet's output time format `2006-01-02T15:04:05.000000000Z07:00`: the fraction padded (or cut)
/// to 9 digits, the offset kept as written.
pub fn format_timestamp_out(raw: &str) -> String {
    // Split "<date>T<hh:mm:ss>[.frac]<zone>".
    let Some(t) = raw.find('T') else {
        return raw.to_owned();
    };
    let secs_end = t + 9; // "Thh:mm:ss"
    if raw.len() < secs_end {
        return raw.to_owned();
    }
    let (head, tail) = raw.split_at(secs_end);
    let (frac, zone) = match tail.strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            (&f[..n], &f[n..])
        }
        None => ("", tail),
    };
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    format!("{head}.{digits}{zone}")
}

/// Byte offset where the last `n` lines of `data` begin (pkg/util/tail). A final line without a
/// newline counts as a line.
pub fn tail_start(data: &[u8], n: u64) -> usize {
    if n == 0 {
        return data.len();
    }
    let mut end = data.len();
    if data.last() == Some(&b'\n') {
        end -= 1;
    }
    let mut seen = 0;
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Turns parsed entries into response bytes: since filter, timestamps, partial joining, byte limit.
#[derive(Debug)]
pub struct LogWriter {
    timestamps: bool,
    since: Option<Timestamp>,
    remaining: Option<u64>,
    at_line_start: bool,
}

impl LogWriter {
    pub fn new(opts: &LogOptions) -> Self {
        Self {
            timestamps: opts.timestamps,
            since: opts.since,
            remaining: opts.limit_bytes,
            at_line_start: true,
        }
    }

    /// The byte limit has been reached: nothing more will be written.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Append the output for one file line to `out`. Unparseable lines are skipped (kubelet logs
    /// and continues).
    pub fn push_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        let entry = match parse_cri_line(line) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "skipping unparseable log line");
                return;
            }
        };
        if self.since.is_some_and(|s| entry.time < s) {
            return;
        }
        let mut msg = Vec::with_capacity(entry.content.len() + 40);
        if self.timestamps && self.at_line_start {
            msg.extend_from_slice(format_timestamp_out(entry.raw_time).as_bytes());
            msg.push(b' ');
        }
        msg.extend_from_slice(entry.content);
        if !entry.partial {
            msg.push(b'\n');
        }
        self.at_line_start = !entry.partial;
        if let Some(rem) = self.remaining.as_mut() {
            let n = (*rem).min(msg.len() as u64) as usize;
            msg.truncate(n);
            *rem -= n as u64;
        }
        out.extend_from_slice(&msg);
    }

    /// Feed raw file bytes: complete lines are written to `out`; an incomplete tail stays in
    /// `pending` for the next call.
    pub fn push_bytes(&mut self, pending: &mut Vec<u8>, data: &[u8], out: &mut Vec<u8>) {
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + i + 1;
            self.push_line(&pending[start..end], out);
            start = end;
        }
        pending.drain(..start);
    }
}

/// What the streamer needs to know about the container while following.
pub trait ContainerRunning: Send + 'static {
    /// Whether the container is still running (more log lines may come).
    fn running(&mut self) -> impl std::future::Future<Output = bool> + Send;
}

/// Poll interval of `follow`.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Stream `path` into `tx` per `opts`. Ends at EOF (or, with follow, once the container stopped and
/// the file is drained), when the byte limit is reached, when the receiver is dropped (client gone)
/// or on `shutdown`.
pub async fn stream_file(
    path: PathBuf,
    mut file: tokio::fs::File,
    opts: LogOptions,
    mut container: impl ContainerRunning,
    tx: mpsc::Sender<Bytes>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let mut writer = LogWriter::new(&opts);
    if let Some(n) = opts.tail_lines {
        // The tail is found in what is there now (files are rotated at a few MiB).
        let mut all = Vec::new();
        file.read_to_end(&mut all).await?;
        let start = tail_start(&all, n);
        file.seek(std::io::SeekFrom::Start(start as u64)).await?;
    }
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut polls = 0u32;
    let mut stopped = false;
    loop {
        let n = file.read(&mut buf).await?;
        if n > 0 {
            let mut out = Vec::new();
            writer.push_bytes(&mut pending, &buf[..n], &mut out);
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return Ok(());
            }
            if writer.done() {
                return Ok(());
            }
            continue;
        }
        // EOF.
        if !opts.follow || stopped {
            return Ok(());
        }
        if polls.is_multiple_of(4) && !container.running().await {
            // One more pass to drain what was written before the container exited.
            stopped = true;
            continue;
        }
        polls = polls.wrapping_add(1);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        tracing::trace!(path = %path.display(), "following log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn options() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let o = parse_log_options(
            &pairs("follow=true&tailLines=10&timestamps=1&limitBytes=5&sinceSeconds=60"),
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(10));
        assert_eq!(o.limit_bytes, Some(5));
        assert_eq!(o.since, Some("2026-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(
            parse_log_options(&pairs("tail=3"), now).unwrap().tail_lines,
            Some(3)
        );
        assert_eq!(
            parse_log_options(&pairs("tailLines=3&tail=all"), now)
                .unwrap()
                .tail_lines,
            None
        );
        assert_eq!(
            parse_log_options(&pairs("previous=true&sinceTime=2025-12-31T00:00:00Z"), now)
                .unwrap()
                .since,
            Some("2025-12-31T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_log_options(&pairs("follow=yes"), now),
            Err(LogQueryError::Decode)
        );
        assert_eq!(
            parse_log_options(&pairs("tailLines=x"), now),
            Err(LogQueryError::Decode)
        );
        assert_eq!(
            parse_log_options(&pairs("tailLines=-1"), now),
            Err(LogQueryError::Invalid)
        );
        assert_eq!(
            parse_log_options(&pairs("limitBytes=0"), now),
            Err(LogQueryError::Invalid)
        );
        assert_eq!(
            parse_log_options(&pairs("sinceSeconds=0"), now),
            Err(LogQueryError::Invalid)
        );
        assert_eq!(
            parse_log_options(&pairs("sinceSeconds=5&sinceTime=2025-12-31T00:00:00Z"), now),
            Err(LogQueryError::Invalid)
        );
        assert_eq!(
            LogQueryError::Invalid.to_string(),
            r#"{"message": "Invalid request."}"#
        );
    }

    #[test]
    fn parses_cri_lines() {
        let e = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout F log content 1\n").unwrap();
        assert_eq!(e.stream, "stdout");
        assert!(!e.partial);
        assert_eq!(e.content, b"log content 1");
        assert_eq!(
            e.time,
            "2016-10-06T00:17:09.669794202Z"
                .parse::<Timestamp>()
                .unwrap()
        );
        let e = parse_cri_line(b"2016-10-06T00:17:09.669794203+02:00 stderr P part").unwrap();
        assert!(e.partial);
        assert_eq!(e.stream, "stderr");
        let e = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout F:x  two  spaces").unwrap();
        assert_eq!(e.content, b" two  spaces");
        assert!(!e.partial);
        assert_eq!(
            parse_cri_line(b"2016-10-06T00:17:09Z stdout F")
                .unwrap()
                .content,
            b""
        );
        assert_eq!(parse_cri_line(b"nospace"), Err(CriLogError::NoTimestamp));
        assert!(matches!(
            parse_cri_line(b"yesterday stdout F x"),
            Err(CriLogError::BadTimestamp(_))
        ));
        assert!(matches!(
            parse_cri_line(b"2016-10-06T00:17:09Z stdin F x"),
            Err(CriLogError::BadStream(_))
        ));
        assert_eq!(
            parse_cri_line(b"2016-10-06T00:17:09Z stdout"),
            Err(CriLogError::NoStream)
        );
    }

    #[test]
    fn timestamp_format() {
        assert_eq!(
            format_timestamp_out("2016-10-06T00:17:09.669794202Z"),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(
            format_timestamp_out("2016-10-06T00:17:09.5Z"),
            "2016-10-06T00:17:09.500000000Z"
        );
        assert_eq!(
            format_timestamp_out("2016-10-06T00:17:09+02:00"),
            "2016-10-06T00:17:09.000000000+02:00"
        );
    }

    #[test]
    fn tail() {
        let d = b"a\nb\nc\n";
        assert_eq!(tail_start(d, 0), 6);
        assert_eq!(tail_start(d, 1), 4);
        assert_eq!(tail_start(d, 2), 2);
        assert_eq!(tail_start(d, 3), 0);
        assert_eq!(tail_start(d, 10), 0);
        assert_eq!(tail_start(b"a\nb", 1), 2);
        assert_eq!(tail_start(b"", 1), 0);
    }

    const LOG: &[u8] = b"2026-01-01T00:00:00.1Z stdout F one\n\
2026-01-01T00:00:01.2Z stderr P tw\n\
2026-01-01T00:00:01.3Z stderr F o\n\
garbage\n\
2026-01-01T00:00:02Z stdout F three\n";

    fn render(opts: LogOptions, chunks: &[&[u8]]) -> String {
        let mut w = LogWriter::new(&opts);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        for c in chunks {
            w.push_bytes(&mut pending, c, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writer_joins_partials_and_skips_garbage() {
        assert_eq!(render(LogOptions::default(), &[LOG]), "one\ntwo\nthree\n");
        // Chunk boundaries anywhere give the same output; an incomplete last line waits.
        let (a, b) = LOG.split_at(50);
        assert_eq!(render(LogOptions::default(), &[a, b]), "one\ntwo\nthree\n");
        assert_eq!(
            render(LogOptions::default(), &[&LOG[..LOG.len() - 3]]),
            "one\ntwo\n"
        );
    }

    #[test]
    fn writer_options() {
        let ts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(ts, &[LOG]),
            "2026-01-01T00:00:00.100000000Z one\n2026-01-01T00:00:01.200000000Z two\n2026-01-01T00:00:02.000000000Z three\n"
        );
        let since = LogOptions {
            since: Some("2026-01-01T00:00:01Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(render(since, &[LOG]), "two\nthree\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(limit, &[LOG]), "one\ntw");
        let mut w = LogWriter::new(&LogOptions {
            limit_bytes: Some(4),
            ..Default::default()
        });
        let mut out = Vec::new();
        w.push_bytes(&mut Vec::new(), LOG, &mut out);
        assert!(w.done());
    }

    /// A container whose running state the test controls; `asked` is notified on every check
    /// (the streamer checks when it reaches the end of the file).
    struct Flag(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<tokio::sync::Notify>,
    );
    impl ContainerRunning for Flag {
        async fn running(&mut self) -> bool {
            self.1.notify_one();
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }
    fn flag(
        running: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> (Flag, std::sync::Arc<tokio::sync::Notify>) {
        let n = std::sync::Arc::new(tokio::sync::Notify::new());
        (Flag(running.clone(), n.clone()), n)
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut s = Vec::new();
        while let Some(b) = rx.recv().await {
            s.extend_from_slice(&b);
        }
        String::from_utf8(s).unwrap()
    }

    #[tokio::test]
    async fn stream_tail_and_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));

        // tail=1 without follow.
        let (tx, rx) = mpsc::channel(4);
        let f = tokio::fs::File::open(&path).await.unwrap();
        let opts = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let tok = tokio_util::sync::CancellationToken::new();
        stream_file(path.clone(), f, opts, flag(&running).0, tx, tok.clone())
            .await
            .unwrap();
        assert_eq!(collect(rx).await, "three\n");

        // follow: sees appended lines, ends once the container stopped.
        let (tx, mut rx) = mpsc::channel(4);
        let f = tokio::fs::File::open(&path).await.unwrap();
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(0),
            ..Default::default()
        };
        let (fl, at_eof) = flag(&running);
        let task = tokio::spawn(stream_file(path.clone(), f, opts, fl, tx, tok.clone()));
        at_eof.notified().await;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"2026-01-01T00:00:03Z stdout F four\n")
                .unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"four\n");
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"2026-01-01T00:00:04Z stdout F five\n")
                .unwrap();
        }
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        let rest = tokio::time::timeout(Duration::from_secs(5), collect(rx))
            .await
            .unwrap();
        assert_eq!(rest, "five\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_stops_when_client_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, rx) = mpsc::channel(4);
        let f = tokio::fs::File::open(&path).await.unwrap();
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(stream_file(
            path,
            f,
            opts,
            flag(&running).0,
            tx,
            tokio_util::sync::CancellationToken::new(),
        ));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
