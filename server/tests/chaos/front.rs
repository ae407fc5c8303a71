//! A round-robin TCP front for the chaos cluster, as a load balancer would be: each
//! connection goes to the next node that accepts, and the chaos can reset any of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::schedule::Rng;

/// The front; connections live as long as the runtime that started it.
pub(crate) struct Front {
    /// `ws://` URL of the front.
    pub(crate) url: String,
    /// Each spliced connection's reset switch, by number.
    live: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
}

impl Front {
    /// Listen on 127.0.0.1:0 and spread connections over `nodes`.
    pub(crate) async fn start(nodes: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let live: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
        let table = Arc::clone(&live);
        tokio::spawn(async move {
            let mut next = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                next += 1;
                let (reset, on_reset) = oneshot::channel();
                lock(&table).insert(next, reset);
                let (nodes, table, id) = (nodes.clone(), Arc::clone(&table), next);
                tokio::spawn(async move {
                    splice(client, &nodes, id as usize, on_reset).await;
                    lock(&table).remove(&id);
                });
            }
        });
        Self { url, live }
    }

    /// Reset up to `count` connections picked at random; how many were.
    pub(crate) fn reset(&self, count: usize, rng: &mut Rng) -> usize {
        let mut live = lock(&self.live);
        let mut done = 0;
        while done < count && !live.is_empty() {
            let ids: Vec<u64> = live.keys().copied().collect();
            let id = ids[rng.below(ids.len() as u64) as usize];
            if let Some(reset) = live.remove(&id) {
                let _ = reset.send(());
                done += 1;
            }
        }
        done
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Carry `client` to the first of `nodes` (from `first` on) that accepts, until either side
/// closes or `on_reset` fires: then both sides get a TCP reset.
async fn splice(
    mut client: TcpStream,
    nodes: &[SocketAddr],
    first: usize,
    on_reset: oneshot::Receiver<()>,
) {
    let _ = client.set_nodelay(true);
    for i in 0..nodes.len() {
        let node = nodes[(first + i) % nodes.len()];
        let Ok(mut server) = TcpStream::connect(node).await else {
            continue;
        };
        let _ = server.set_nodelay(true);
        let reset = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
            fired = on_reset => fired.is_ok(),
        };
        if reset {
            // SO_LINGER 0: the close is a reset, as a balancer's dropped flow looks.
            for stream in [&client, &server] {
                let _ = SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
            }
        }
        return;
    }
    // No node accepts: the client's connection closes, as a balancer's would.
}
