//! The cluster link as the connection code sees it: the [`Remote`] seam.

use std::sync::Arc;

use super::Cluster;
use crate::remote::{Adopt, Claim, ClaimFuture, Forward, Pending, Remote};

/// The other nodes of a cluster, reached through this node's link.
pub(crate) struct Nodes(pub(crate) Arc<Cluster>);

impl Remote for Nodes {
    fn forward(&self, forward: Forward) -> Pending {
        self.0.forward(forward)
    }

    fn claim<'a>(&'a self, claim: &'a Claim) -> ClaimFuture<'a> {
        Box::pin(async move {
            let (claimed, adoption) = self.0.claim(claim).await;
            let adopt = adoption.map(|adoption| {
                let cluster = Arc::clone(&self.0);
                Box::new(move |cell| cluster.adopt(adoption, cell)) as Adopt
            });
            (claimed, adopt)
        })
    }
}
