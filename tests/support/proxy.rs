//! A TCP proxy in front of a broker that a test can cut: every connection through it is closed
//! and new ones are refused until it is restored. The broker behind it keeps running with its
//! data (Tansu's memory storage forgets everything when the process restarts), so a test can
//! take Kafka away for as long as it likes and then read back everything that was written.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running proxy (its threads end when it is dropped).
pub struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on `port` and forwards every connection to `upstream`.
    pub fn start(port: u16, upstream: SocketAddr) -> Proxy {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST, port, upstream)
    }

    /// Listens on `ip:port` and forwards every connection to `upstream`.
    pub fn start_on(ip: std::net::Ipv4Addr, port: u16, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((ip, port)).expect("proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let open = Arc::new(AtomicBool::new(true));
        let stopped = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, s, c) = (Arc::clone(&open), Arc::clone(&stopped), Arc::clone(&conns));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                // Cut: the connection is accepted and closed at once, like a broker that is
                // gone (librdkafka sees the disconnect and retries).
                if !o.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c1), Ok(s1)) = (client.try_clone(), server.try_clone())
                    && let Ok(mut all) = c.lock()
                {
                    all.push(c1);
                    all.push(s1);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Proxy {
            port,
            open,
            stopped,
            conns,
        }
    }

    /// `host:port` of the proxy.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::Relaxed);
        self.close_all();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    fn close_all(&self) {
        if let Ok(mut all) = self.conns.lock() {
            for s in all.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.close_all();
    }
}

/// Copies `from` → `to` on a thread of its own until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
