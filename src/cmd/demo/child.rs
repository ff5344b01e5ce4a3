//! The `lbp run` child of the demo, and its temporary files.

use super::*;

/// `lbp run`, stopped (SIGTERM, then SIGKILL) by its PID on drop; its stderr
/// lines are collected by a thread.
pub(super) struct LbpChild {
    child: Option<Child>,
    pub(super) ready: String,
    stderr: Arc<Mutex<Log>>,
}

/// The last lines of lbp's stderr, and how many there were in all.
#[derive(Default)]
struct Log {
    total: usize,
    lines: std::collections::VecDeque<String>,
}

impl LbpChild {
    /// Start it and wait (bounded, and for Ctrl-C) for its `lbp: ready` line.
    pub(super) fn start(mut cmd: Command) -> Result<LbpChild, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start lbp run: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut lbp = LbpChild {
            child: Some(child),
            ready: String::new(),
            stderr: Arc::new(Mutex::new(Log::default())),
        };
        let lines = lbp.stderr.clone();
        if let Some(stderr) = stderr {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().take(100_000) {
                    let Ok(line) = line else { break };
                    let mut v = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if v.lines.len() >= 1000 {
                        v.lines.pop_front();
                    }
                    v.lines.push_back(line);
                    v.total += 1;
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().take(100) {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let end = Instant::now() + READY_WAIT;
        while Instant::now() < end && !interrupted() && lbp.alive() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("lbp: ready") => {
                    lbp.ready = line;
                    return Ok(lbp);
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let why = if interrupted() {
            "interrupted"
        } else {
            "lbp run did not get ready"
        };
        lbp.stop();
        Err(format!(
            "{why}; its stderr:\n{}",
            lbp.stderr_tail(20).join("\n")
        ))
    }

    pub(super) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then wait up to ten seconds; SIGKILL if it does not end.
    pub(super) fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let _ = lbp_runtime::sys::signal_child(&mut child, libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub(super) fn stderr_tail(&self, n: usize) -> Vec<String> {
        let v = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        v.lines
            .iter()
            .skip(v.lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// How many lines lbp has written on stderr so far (for `stderr_since`).
    pub(super) fn stderr_mark(&self) -> usize {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// The lines written after `mark` (those still kept).
    pub(super) fn stderr_since(&self, mark: usize) -> Vec<String> {
        let v = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let kept_from = v.total - v.lines.len();
        v.lines
            .iter()
            .skip(mark.saturating_sub(kept_from))
            .cloned()
            .collect()
    }

    pub(super) fn final_line(&self) -> Option<String> {
        let v = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        v.lines
            .iter()
            .rev()
            .find(|l| l.starts_with("lbp: final"))
            .cloned()
    }
}

impl Drop for LbpChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Other children of the demo (the back ends' `lbp agent`s): killed by their
/// PIDs and reaped on drop.
#[derive(Default)]
pub(super) struct Kids(pub(super) Vec<Child>);

impl Kids {
    pub(super) fn stop(&mut self) {
        for mut c in self.0.drain(..) {
            if let Ok(None) = c.try_wait() {
                // Our own child, not yet reaped: its PID is still its own.
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// How many have ended.
    pub(super) fn ended(&mut self) -> usize {
        self.0
            .iter_mut()
            .map(|c| !matches!(c.try_wait(), Ok(None)))
            .filter(|&ended| ended)
            .count()
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file removed on drop.
pub(super) struct RemoveFile(pub(super) std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
