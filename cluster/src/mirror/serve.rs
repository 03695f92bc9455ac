//! Serving one edge node's replication stream into the mirror store.

use doppel_proto::v1::replicate_request::Kind;
use doppel_proto::v1::{ReplicateRequest, ReplicateResponse};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::{Job, MirrorStore};
use crate::replication::REPLICATION_FORMAT;

/// The response stream of one replication stream: the acknowledged sequence, once
/// after the hello and then after every commit that advanced it.
pub type ReplicationStream = ReceiverStream<Result<ReplicateResponse, Status>>;

/// Acknowledgements waiting to be sent; a slow reader of acks slows the stream.
const RESPONSE_QUEUE: usize = 64;
/// Batches of one stream queued or committing, whose acks are not yet sent.
const PENDING_REPLIES: usize = 256;

impl MirrorStore {
    /// Serves one Replicate stream (called by the NodeService implementation, which
    /// has already checked the cluster id and passes the calling node's id): reads the
    /// hello, answers with the link's acknowledged sequence, then queues batches for
    /// the store's writer thread and answers each commit with the new acknowledged
    /// sequence. Batches that arrive while a commit runs are committed together in the
    /// next transaction (group commit).
    ///
    /// The stream ends with INVALID_ARGUMENT, nothing applied from the offending
    /// batch or after it, for an empty caller id, a first message that is not a hello,
    /// a hello of another node or of an unknown format, a batch whose entries are out
    /// of order or do not decode. Must be called inside a Tokio runtime.
    pub fn serve_replication(
        &self,
        caller_node: String,
        incoming: Streaming<ReplicateRequest>,
    ) -> ReplicationStream {
        let (out, responses) = mpsc::channel(RESPONSE_QUEUE);
        let span = tracing::info_span!("mirror_link", node = %caller_node);
        tokio::spawn(
            self.clone()
                .serve_stream(caller_node, incoming, out)
                .instrument(span),
        );
        ReceiverStream::new(responses)
    }

    async fn serve_stream(
        self,
        caller: String,
        mut incoming: Streaming<ReplicateRequest>,
        out: mpsc::Sender<Result<ReplicateResponse, Status>>,
    ) {
        let refuse = |message: String| {
            let out = out.clone();
            async move {
                tracing::warn!(%message, "refused a replication stream");
                let _ = out.send(Err(Status::invalid_argument(message))).await;
            }
        };
        if caller.is_empty() {
            refuse("a replication stream needs the calling node's id (x-doppel-node)".into()).await;
            return;
        }
        let first = tokio::select! {
            _ = out.closed() => return,
            message = incoming.message() => message,
        };
        let hello = match first {
            Ok(Some(ReplicateRequest {
                kind: Some(Kind::Hello(hello)),
            })) => hello,
            Ok(Some(_)) => {
                refuse("the first message of a replication stream must be a hello".into()).await;
                return;
            }
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "replication stream failed before its hello");
                return;
            }
        };
        if hello.format != REPLICATION_FORMAT {
            refuse(format!(
                "unknown replication format {}; this node reads format {REPLICATION_FORMAT} (postcard mirror updates)",
                hello.format
            ))
            .await;
            return;
        }
        if !hello.node_id.is_empty() && hello.node_id != caller {
            refuse(format!(
                "the hello names node `{}` but the call comes from node `{caller}`",
                hello.node_id
            ))
            .await;
            return;
        }

        let opened = {
            let store = self.clone();
            let caller = caller.clone();
            tokio::task::spawn_blocking(move || store.shared().open_stream(&caller, hello.head))
                .await
        };
        let (stream, acked) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                let _ = out
                    .send(Err(Status::unavailable(format!(
                        "cannot open the replication link: {error}"
                    ))))
                    .await;
                return;
            }
            Err(_) => {
                let _ = out
                    .send(Err(Status::unavailable(
                        "the mirror store is shutting down",
                    )))
                    .await;
                return;
            }
        };
        tracing::info!(acked, head = hello.head, "edge node connected");
        if out.send(Ok(ReplicateResponse { acked })).await.is_err() {
            self.shared().close_stream(&caller, stream);
            return;
        }

        // Acks go out in batch order; a refusal ends the response.
        let (pending, mut replies) =
            mpsc::channel::<oneshot::Receiver<Result<u64, Status>>>(PENDING_REPLIES);
        let responder_out = out.clone();
        let mut responder = tokio::spawn(async move {
            let mut last = acked;
            while let Some(reply) = replies.recv().await {
                let result = reply
                    .await
                    .unwrap_or_else(|_| Err(Status::unavailable("the mirror store closed")));
                match result {
                    Ok(acked) if acked > last => {
                        last = acked;
                        if responder_out
                            .send(Ok(ReplicateResponse { acked }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(status) => {
                        let _ = responder_out.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        let mut responder_done = false;
        let mut last_seq = 0u64;
        let ended = loop {
            let message = tokio::select! {
                _ = out.closed() => break "the edge stopped reading",
                _ = &mut responder => {
                    responder_done = true;
                    break "the stream ended with an error";
                }
                message = incoming.message() => message,
            };
            let batch = match message {
                Ok(Some(ReplicateRequest {
                    kind: Some(Kind::Batch(batch)),
                })) => batch,
                Ok(Some(ReplicateRequest {
                    kind: Some(Kind::Hello(_)),
                })) => {
                    let _ = pending
                        .send(refusal("a replication stream takes one hello".into()))
                        .await;
                    break "a second hello";
                }
                Ok(Some(ReplicateRequest { kind: None })) => {
                    let _ = pending
                        .send(refusal("a replication message carries nothing".into()))
                        .await;
                    break "an empty message";
                }
                Ok(None) => break "the edge closed the stream",
                Err(status) => {
                    tracing::debug!(%status, "replication stream failed");
                    break "the stream failed";
                }
            };
            let mut entries = Vec::with_capacity(batch.entries.len());
            let mut out_of_order = None;
            for entry in batch.entries {
                if entry.seq <= last_seq {
                    out_of_order.get_or_insert((last_seq, entry.seq));
                }
                last_seq = entry.seq;
                entries.push((entry.seq, entry.updates));
            }
            if let Some((before, seq)) = out_of_order {
                let _ = pending
                    .send(refusal(format!(
                        "outbox entries must come in increasing sequence order: {seq} after {before}"
                    )))
                    .await;
                break "entries out of order";
            }
            let (reply, wait) = oneshot::channel();
            let job = Job {
                node: caller.clone(),
                stream,
                entries,
                head: batch.head,
                reply,
            };
            if self.submit(job).await.is_err() {
                let _ = pending
                    .send(ready(Err(Status::unavailable(
                        "the mirror store is closing",
                    ))))
                    .await;
                break "the store is closing";
            }
            if pending.send(wait).await.is_err() {
                break "the stream ended with an error";
            }
        };
        drop(pending);
        if !responder_done {
            // Deliver the acks of what is already queued (each waits for one commit).
            let _ = responder.await;
        }
        self.shared().close_stream(&caller, stream);
        tracing::info!(reason = ended, "edge node disconnected");
    }
}

fn ready(result: Result<u64, Status>) -> oneshot::Receiver<Result<u64, Status>> {
    let (reply, wait) = oneshot::channel();
    let _ = reply.send(result);
    wait
}

fn refusal(message: String) -> oneshot::Receiver<Result<u64, Status>> {
    tracing::warn!(%message, "refused a replication stream");
    ready(Err(Status::invalid_argument(message)))
}
