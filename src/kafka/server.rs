//! Per-shard listener (SO_REUSEPORT: every shard binds the same address and the kernel spreads
//! connections) and the connection task. Requests on a connection are handled concurrently,
//! at most `connection_requests_in_flight_max` at a time, and answered strictly in order;
//! all connections of a shard together hold at most `queued_request_bytes_max` of requests.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use futures::future::{Either, FutureExt};
use futures::io::AsyncWriteExt;
use futures::AsyncReadExt;
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::Task;

use super::codec::{FrameBody, FrameReader};
use super::dispatch::{self, Decoded, Reply};
use crate::runtime::context::ShardContext;

pub fn listen(ctx: &ShardContext) -> std::io::Result<TcpListener> {
    TcpListener::bind(ctx.config.listen).map_err(std::io::Error::from)
}

pub async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_connection(ctx.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Decrements the shard's in-flight count when a request finishes, however it finishes.
struct InFlight(Rc<ShardContext>);

impl InFlight {
    fn start(ctx: &Rc<ShardContext>) -> Self {
        ctx.requests_in_flight.set(ctx.requests_in_flight.get() + 1);
        Self(ctx.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .requests_in_flight
            .set(self.0.requests_in_flight.get() - 1);
    }
}

/// Answers that one write gathers at most: those of requests already answered when the
/// first is written (a group commit completes many at once).
const ANSWERS_PER_WRITE: usize = 16;

/// Writes each request's answer in the order the requests came, until the connection ends.
/// Answers that are ready together go out in one `sendmsg`, not one system call each.
async fn write_answers(
    writer: &mut (impl futures::AsyncWrite + Unpin),
    socket: RawFd,
    pending: local_channel::LocalReceiver<Task<Reply>>,
) {
    let mut waiting: Option<Task<Reply>> = None;
    let mut segments: Vec<bytes::Bytes> = Vec::new();
    loop {
        let task = match waiting.take() {
            Some(task) => task,
            None => match pending.recv().await {
                Some(task) => task,
                None => return,
            },
        };
        let mut replies = vec![task.await];
        while replies.len() < ANSWERS_PER_WRITE {
            let Some(Some(mut next)) = pending.recv().now_or_never() else {
                break;
            };
            match (&mut next).now_or_never() {
                Some(reply) => replies.push(reply),
                None => {
                    waiting = Some(next);
                    break;
                }
            }
        }
        segments.clear();
        let mut close = false;
        for reply in replies {
            match reply {
                Reply::Send(bytes) => segments.push(bytes),
                Reply::SendSegments(parts) => segments.extend(parts),
                Reply::Nothing => {}
                Reply::Close => {
                    close = true;
                    break;
                }
            }
        }
        if write_segments(writer, socket, &segments).await.is_err() || close {
            return;
        }
    }
}

/// Segments one `sendmsg` takes at most (well under the kernel's IOV_MAX of 1024).
const SEGMENTS_PER_SEND: usize = 64;

/// Writes `segments` in order with as few system calls as the socket allows: one
/// non-blocking `sendmsg` gathers up to `SEGMENTS_PER_SEND` of them; when the socket buffer
/// is full, an ordinary write of the rest of the current segment waits for room.
async fn write_segments(
    writer: &mut (impl futures::AsyncWrite + Unpin),
    socket: RawFd,
    segments: &[bytes::Bytes],
) -> std::io::Result<()> {
    let (mut index, mut offset) = (0usize, 0usize);
    let mut slices: Vec<libc::iovec> = Vec::with_capacity(SEGMENTS_PER_SEND);
    while index < segments.len() {
        // An empty segment sends nothing, so sendmsg's 0 would never move past it.
        if offset == segments[index].len() {
            (index, offset) = (index + 1, 0);
            continue;
        }
        slices.clear();
        for (i, segment) in segments[index..].iter().take(SEGMENTS_PER_SEND).enumerate() {
            let part = if i == 0 {
                &segment[offset..]
            } else {
                &segment[..]
            };
            slices.push(libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            });
        }
        // SAFETY: a zeroed msghdr is valid (no name, no control data); its iovecs point into
        // `segments`, which outlive the call, and sendmsg only reads them.
        let sent = unsafe {
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = slices.as_mut_ptr();
            message.msg_iovlen = slices.len();
            libc::sendmsg(socket, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let Ok(mut sent) = usize::try_from(sent) else {
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    writer.write_all(&segments[index][offset..]).await?;
                    (index, offset) = (index + 1, 0);
                    continue;
                }
                _ => return Err(error),
            }
        };
        while sent > 0 {
            let left = segments[index].len() - offset;
            if sent < left {
                offset += sent;
                break;
            }
            sent -= left;
            (index, offset) = (index + 1, 0);
        }
    }
    Ok(())
}

/// The body of a frame whose room in the budget is taken, if it arrives within `wait`; a
/// connection that fails or stalls is closed (the caller stops on `None`).
async fn read_body<R: futures::io::AsyncRead + Unpin>(
    frames: &mut FrameReader<R>,
    size: usize,
    wait: Duration,
    peer: &str,
) -> Option<FrameBody> {
    let body = std::pin::pin!(frames.frame_body(size));
    let waited = std::pin::pin!(glommio::timer::Timer::new(wait));
    match futures::future::select(body, waited).await {
        Either::Left((Ok(frame), _)) => Some(frame),
        Either::Left((Err(error), _)) => {
            tracing::info!(%peer, %error, "closing connection");
            None
        }
        Either::Right(_) => {
            tracing::info!(%peer, size, ?wait, "request body did not arrive; closing");
            None
        }
    }
}

async fn serve_connection(ctx: Rc<ShardContext>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = stream.as_raw_fd();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (reader, mut writer) = stream.split();
    let (responses, pending) =
        local_channel::new_bounded::<Task<Reply>>(ctx.config.connection_requests_in_flight_max);
    let writer_task = glommio::spawn_local(async move {
        write_answers(&mut writer, socket, pending).await;
        let _ = writer.close().await;
    });
    let mut frames = FrameReader::new(reader, socket);
    loop {
        let size = match frames.next_frame_size(ctx.config.request_bytes_max).await {
            Ok(size) => size,
            Err(super::codec::FrameError::Closed) => break,
            Err(error) => {
                tracing::info!(%peer, %error, "closing connection");
                break;
            }
        };
        if ctx.stopping.get() {
            break;
        }
        // Room for the request is taken before its body is read: while the shard holds its
        // budget of requests this connection stops reading and TCP pushes back on the
        // client, so what the budget does not count is one read-ahead per connection
        // (`READ_AHEAD_BYTES_MAX`). A frame larger than the whole budget waits for all of it.
        let units = size.min(ctx.config.queued_request_bytes_max) as u64;
        let Ok(budget) = ctx.request_bytes_budget.acquire_static_permit(units).await else {
            break;
        };
        let body_wait = Duration::from_millis(ctx.config.request_body_wait_ms);
        let Some(frame) = read_body(&mut frames, size, body_wait, &peer).await else {
            break;
        };
        let task = match dispatch::decode(frame.bytes, frame.own_allocation) {
            Ok(Decoded::Request(mut request)) => {
                request.client_host = format!(
                    "/{}",
                    peer.rsplit_once(':').map_or(peer.as_str(), |(h, _)| h)
                );
                let guard = InFlight::start(&ctx);
                let ctx = ctx.clone();
                glommio::spawn_local(async move {
                    let (api, correlation_id) = (request.api_key, request.header.correlation_id);
                    tracing::trace!(?api, correlation_id, "request start");
                    let response = dispatch::handle(ctx, *request).await;
                    tracing::trace!(?api, correlation_id, "request done");
                    drop((guard, budget));
                    response
                })
            }
            Ok(Decoded::Immediate(bytes)) => {
                glommio::spawn_local(async move { Reply::Send(bytes) })
            }
            Err(error) => {
                tracing::info!(%peer, %error, "closing connection");
                break;
            }
        };
        if responses.send(task).await.is_err() {
            break;
        }
    }
    drop(responses);
    writer_task.await;
}
