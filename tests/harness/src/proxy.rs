//! A TCP proxy on a free port that holds traffic (`pause`) and cuts connections
//! (`cut`): a stalled, then dropped, network link between a client and a server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::ports::free_port;

/// Forwards every connection made to `127.0.0.1:port` to `127.0.0.1:target`, one
/// thread per direction. Stops accepting on drop and cuts what is open.
pub struct TcpProxy {
    pub port: u16,
    pub target: u16,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    paused: bool,
    /// Incremented by every `cut`: connections of an older generation are gone.
    generation: u64,
    /// Both sockets of every open connection, to shut them down on `cut`.
    open: Vec<(TcpStream, TcpStream)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TcpProxy {
    /// A proxy on a free port forwarding to `127.0.0.1:target`.
    pub fn start(target: u16) -> anyhow::Result<Self> {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept(listener, target, accepting))?;
        Ok(Self {
            port,
            target,
            shared,
        })
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Holds traffic in both directions: what is read is kept (at most one buffer per
    /// direction) until `resume`, or dropped by `cut`. Connections stay open and new
    /// ones are still accepted (and held too).
    pub fn pause(&self) {
        self.shared.lock().paused = true;
        self.shared.changed.notify_all();
    }

    /// Lets traffic flow again, held data first.
    pub fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.changed.notify_all();
    }

    /// Closes every open connection on both sides, dropping what was held. New
    /// connections are still accepted; a pause stays in force.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.generation += 1;
        for (client, server) in state.open.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accepting thread so it sees `stop`.
        let _ = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        );
    }
}

fn accept(listener: TcpListener, target: u16, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (|| {
            Ok::<_, std::io::Error>((
                client.try_clone()?,
                server.try_clone()?,
                client.try_clone()?,
                server.try_clone()?,
            ))
        })();
        let Ok((client_read, server_read, client_keep, server_keep)) = clones else {
            continue;
        };
        let generation = {
            let mut state = shared.lock();
            state.open.push((client_keep, server_keep));
            state.generation
        };
        for (from, to) in [(client_read, server), (server_read, client)] {
            let shared = Arc::clone(&shared);
            let _ = std::thread::Builder::new()
                .name("proxy-pump".into())
                .spawn(move || pump(from, to, &shared, generation));
        }
    }
}

/// Copies `from` → `to` until either closes or the connection is cut, holding what
/// it read while paused.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, generation: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut state = shared.lock();
            while state.paused && state.generation == generation {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.generation != generation {
                return;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // Pass the close on (half-close, as TCP does).
    let _ = to.shutdown(Shutdown::Write);
}
