//! The back ends' HTTP servers: threads of the demo's process, each in its back end's namespace.

use super::net::enter;
use super::*;

/// The back ends' HTTP servers, one thread each; stopped and joined on drop.
pub(super) struct Servers {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// A server on `[::]:8080` in each namespace, answering with the back end's
    /// name; returns once all listen.
    pub(super) fn start(&mut self, backends: &[&Netns]) -> Result<(), String> {
        for (ns, (name, ..)) in backends.iter().zip(BACKENDS) {
            let (path, stop) = (ns.path(), self.stop.clone());
            let (tx, rx) = mpsc::channel();
            self.threads.push(std::thread::spawn(move || {
                let bound = enter(&path).and_then(|()| {
                    let l = TcpListener::bind("[::]:8080").map_err(|e| e.to_string())?;
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    Ok(l)
                });
                let l = match bound {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let end = Instant::now() + KEEP_LIMIT + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = answer(s, name);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| format!("back end {name}: the server did not start"))?
                .map_err(|e| format!("back end {name}: {e}"))?;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Read one request head (bounded) and answer with the back end's name.
pub(super) fn answer(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}\n",
        name.len() + 1
    );
    s.write_all(reply.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)
}
