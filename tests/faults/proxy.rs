//! A TCP proxy between the operator and kube-apiserver, so a test can make
//! the API server slow or unreachable for the operator alone (the test's
//! own admin client goes direct). TLS passes through untouched, end to end:
//! the operator's kubeconfig keeps the host, 127.0.0.1, which the serving
//! certificate names, and only the port changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Default)]
struct State {
    /// Added to every chunk the server sends back on a slow connection,
    /// read at each chunk (so a change reaches connections already open).
    delay_ms: AtomicU64,
    /// Every n-th accepted connection is slow (0: none, 1: all).
    slow_every: AtomicU64,
    /// New connections are closed at once while set.
    blocked: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards each connection to `upstream`.
    /// Needs a multi-threaded runtime: the tests block their thread on the
    /// rig's scripts, and the proxy must keep forwarding meanwhile.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (cut, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let (state, cut) = (state.clone(), cut.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if state.blocked.load(Ordering::SeqCst) {
                        state.refused.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                    let n = state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    let every = state.slow_every.load(Ordering::SeqCst);
                    let slow = every != 0 && n % every == 0;
                    let (state, cuts) = (state.clone(), cut.subscribe());
                    tokio::spawn(forward(client, upstream, slow, state, cuts));
                }
            }
        });
        Proxy {
            addr,
            state,
            cut,
            task,
        }
    }

    /// The URL to give the operator.
    pub fn server(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Responses on slow connections arrive `delay` late; which connections
    /// are slow is decided as they open (`every` n-th; 1 for all).
    pub fn slow(&self, delay: Duration, every: u64) {
        self.state.slow_every.store(every, Ordering::SeqCst);
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Ends every delay at once, on connections old and new.
    pub fn fast(&self) {
        self.state.delay_ms.store(0, Ordering::SeqCst);
        self.state.slow_every.store(0, Ordering::SeqCst);
    }

    /// Closes every live connection (the operator sees them reset).
    pub fn cut_all(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    /// While blocked, a new connection is accepted and closed at once.
    pub fn block(&self, blocked: bool) {
        self.state.blocked.store(blocked, Ordering::SeqCst);
    }

    /// Connections closed at once because the proxy was blocked.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    slow: bool,
    state: Arc<State>,
    mut cuts: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    // requests go through at once: a slow answer, not a slow question, is
    // what leaves a write landed but unconfirmed
    let up = async {
        let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
        let _ = server_w.shutdown().await;
    };
    // answers are held back chunk by chunk, each for the delay in force
    // when it arrived: latency, not a bandwidth limit
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = if slow {
                        Duration::from_millis(state.delay_ms.load(Ordering::SeqCst))
                    } else {
                        Duration::ZERO
                    };
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let write_down = async {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if client_w.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = client_w.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, async { tokio::join!(read_down, write_down) }) } => {}
        _ = cuts.changed() => {}
    }
}
