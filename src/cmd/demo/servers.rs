//! The back ends' HTTP servers: threads of the demo's process, each in its back
//! end's namespace. A server can be stopped (its listening socket closed: new
//! connections to port 8080 are refused) and started again, as when a back
//! end's server process dies and is restarted.

use std::sync::atomic::AtomicUsize;

use super::net::enter;
use super::*;

/// The most connections a server answers at once (each on its thread).
const HANDLERS: usize = 32;

/// One back end's server: whether it should listen, and whether it does.
struct Switch {
    want: AtomicBool,
    listening: AtomicBool,
}

/// The back ends' HTTP servers, one thread each; stopped and joined on drop.
pub(super) struct Servers {
    stop: Arc<AtomicBool>,
    switches: Vec<Arc<Switch>>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub(super) fn new() -> Servers {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            switches: Vec::new(),
            threads: Vec::new(),
        }
    }

    /// A server on `[::]:8080` in each namespace, answering with the back end's
    /// name; returns once all listen.
    pub(super) fn start(&mut self, backends: &[&Netns]) -> Result<(), String> {
        for (ns, (name, ..)) in backends.iter().zip(BACKENDS) {
            let (path, stop) = (ns.path(), self.stop.clone());
            let switch = Arc::new(Switch {
                want: AtomicBool::new(true),
                listening: AtomicBool::new(false),
            });
            let sw = switch.clone();
            let (tx, rx) = mpsc::channel();
            self.threads.push(std::thread::spawn(move || {
                if let Err(e) = enter(&path) {
                    let _ = tx.send(e);
                    return;
                }
                serve(name, &stop, &sw, &tx);
            }));
            self.switches.push(switch);
            let end = Instant::now() + Duration::from_secs(10);
            while !self.listening(self.switches.len() - 1) {
                if let Ok(e) = rx.try_recv() {
                    return Err(format!("back end {name}: {e}"));
                }
                if Instant::now() >= end || interrupted() {
                    return Err(format!("back end {name}: the server did not start"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    fn listening(&self, i: usize) -> bool {
        self.switches[i].listening.load(Ordering::SeqCst)
    }

    /// Stop (`on` false) or start back end `i`'s server; returns once it is
    /// closed or listens (bounded).
    pub(super) fn set(&self, i: usize, on: bool) -> Result<(), String> {
        let sw = self.switches.get(i).ok_or("no such back end")?;
        sw.want.store(on, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(5);
        while sw.listening.load(Ordering::SeqCst) != on {
            if Instant::now() >= end || interrupted() {
                let what = if on { "start" } else { "stop" };
                return Err(format!(
                    "back end {}: the server did not {what}",
                    BACKENDS[i].0
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
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

/// A server's loop: listen while wanted, answer one connection at a time;
/// ends on stop or after the longest the demo runs. A failure to listen is
/// sent on `errors` (and retried while wanted).
fn serve(name: &'static str, stop: &AtomicBool, sw: &Switch, errors: &mpsc::Sender<String>) {
    let end = Instant::now() + KEEP_LIMIT + Duration::from_secs(300);
    let mut listener: Option<TcpListener> = None;
    let handlers = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        if !sw.want.load(Ordering::SeqCst) {
            // Closing the socket refuses new connections (and resets the ones
            // not yet accepted), as when the server's process dies.
            listener = None;
            sw.listening.store(false, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let Some(l) = &listener else {
            match TcpListener::bind("[::]:8080").and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => {
                    listener = Some(l);
                    sw.listening.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = errors.send(format!("listen on [::]:8080: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            continue;
        };
        match l.accept() {
            // Each connection on a thread of its own (at most `HANDLERS` at a
            // time), so that one whose request never comes (a health check
            // whose closing was lost) delays no other.
            Ok((s, _)) if handlers.load(Ordering::SeqCst) < HANDLERS => {
                handlers.fetch_add(1, Ordering::SeqCst);
                let h = handlers.clone();
                std::thread::spawn(move || {
                    let _ = answer(s, name);
                    h.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Ok((s, _)) => {
                let _ = answer(s, name);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    sw.listening.store(false, Ordering::SeqCst);
}

/// Read one request head (bounded) and answer with the back end's name.
fn answer(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            // A health check's connection: opened and closed, no request.
            return Ok(());
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
