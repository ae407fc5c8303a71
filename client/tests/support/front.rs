//! A round-robin TCP front for a cluster, as a load balancer would be (docs/cluster.md,
//! "Behind a load balancer"): each connection goes to the next node, and to the one after
//! if that node does not accept (it is restarting).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

pub struct Front {
    pub url: String,
}

impl Front {
    /// Listen on 127.0.0.1:0 and spread connections over `nodes`.
    pub async fn start(nodes: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let first = next.fetch_add(1, Ordering::Relaxed);
                let nodes = nodes.clone();
                tokio::spawn(async move {
                    for i in 0..nodes.len() {
                        let node = nodes[(first + i) % nodes.len()];
                        if let Ok(mut server) = TcpStream::connect(node).await {
                            let _ = server.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                    // No node accepts: the client's connection closes, as a balancer's would.
                });
            }
        });
        Self { url }
    }
}
