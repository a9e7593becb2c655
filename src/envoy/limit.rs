//! The size limit on a Check, kept without buffering what is over it.
//!
//! tonic answers a message over its limit with an RPC error, which a fail-open Envoy turns
//! into an allow, and it reserves a message's whole announced length before reading it. So
//! the gate's server reads each Check's body through [`LimitedBody`]: a gRPC message over
//! [`MAX_CHECK_BYTES`] is dropped as it arrives, whatever its length, and [`TOO_LARGE`]
//! takes its place, which the decoder turns into [`Check::TooLarge`](super::wire::Check)
//! and the service into a 413. Envoy sends such messages when `with_request_body` allows
//! bodies above the limit.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prost::bytes::{Bytes, BytesMut};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;

use super::wire::server::authorization_server::AuthorizationServer;
use super::wire::{MAX_CHECK_BYTES, TOO_LARGE};
use super::AuthorizationService;
use crate::directory::Directory;

/// A gRPC message's prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// [`TOO_LARGE`] with its prefix: what replaces a message over the limit.
const TOO_LARGE_MESSAGE: [u8; PREFIX + TOO_LARGE.len()] =
    [0, 0, 0, 0, 6, 0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01];

/// The gate's `envoy.service.auth.v3.Authorization` server: the generated one, reading
/// request bodies through `LimitedBody`. Its cost on every Check: tonic boxes the wrapped
/// body (one allocation; hyper's body it would have taken as it is) and `LimitedBody` looks
/// at each data frame's message prefixes.
pub struct CheckServer<D>(AuthorizationServer<AuthorizationService<D>>);

impl<D: Directory> CheckServer<D> {
    pub fn new(service: AuthorizationService<D>) -> Self {
        // tonic's limit is never reached (nothing over it gets past `LimitedBody`); set to
        // the same value so that the two cannot drift apart.
        Self(AuthorizationServer::new(service).max_decoding_message_size(MAX_CHECK_BYTES))
    }
}

impl<D> Clone for CheckServer<D> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<D> NamedService for CheckServer<D> {
    const NAME: &'static str = <AuthorizationServer<AuthorizationService<D>> as NamedService>::NAME;
}

impl<D: Directory> Service<http::Request<tonic::body::Body>> for CheckServer<D> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<LimitedBody<tonic::body::Body>>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.call(request.map(LimitedBody::new))
    }
}

/// A request body of gRPC messages in which each message over [`MAX_CHECK_BYTES`] is
/// replaced by [`TOO_LARGE`] and its bytes are dropped as they arrive. Everything else
/// passes unchanged, and without a copy unless a prefix is split between two frames.
pub struct LimitedBody<B> {
    inner: B,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a message's prefix, of which `got` bytes are held.
    Prefix { held: [u8; PREFIX], got: usize },
    /// Passing on the rest of a message.
    Message { left: usize },
    /// Dropping the rest of a message over the limit.
    Skip { left: usize },
}

const START: State = State::Prefix {
    held: [0; PREFIX],
    got: 0,
};

impl<B> LimitedBody<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            state: START,
        }
    }

    /// What of `data` goes on: the same bytes, except for each message over the limit.
    fn pass(&mut self, data: Bytes) -> Bytes {
        let mut out = Pieces::default();
        // `data[from..at]` is passed on unchanged once something interrupts it.
        let (mut from, mut at) = (0, 0);
        while at < data.len() {
            let available = data.len() - at;
            match &mut self.state {
                State::Message { left } => {
                    let taken = available.min(*left);
                    at += taken;
                    *left -= taken;
                    if *left == 0 {
                        self.state = START;
                    }
                }
                State::Skip { left } => {
                    out.push(data.slice(from..at));
                    let taken = available.min(*left);
                    at += taken;
                    from = at;
                    *left -= taken;
                    if *left == 0 {
                        self.state = START;
                    }
                }
                State::Prefix { got: 0, .. } if available >= PREFIX => {
                    let length = message_length(&data[at..at + PREFIX]);
                    if length > MAX_CHECK_BYTES {
                        out.push(data.slice(from..at));
                        out.push(Bytes::from_static(&TOO_LARGE_MESSAGE));
                        from = at + PREFIX;
                    }
                    at += PREFIX;
                    self.state = after_prefix(length);
                }
                State::Prefix { held, got } => {
                    // A prefix split between frames: held here, passed on once whole.
                    out.push(data.slice(from..at));
                    let taken = available.min(PREFIX - *got);
                    held[*got..*got + taken].copy_from_slice(&data[at..at + taken]);
                    *got += taken;
                    at += taken;
                    from = at;
                    if *got == PREFIX {
                        let length = message_length(held);
                        out.push(if length > MAX_CHECK_BYTES {
                            Bytes::from_static(&TOO_LARGE_MESSAGE)
                        } else {
                            Bytes::copy_from_slice(held)
                        });
                        self.state = after_prefix(length);
                    }
                }
            }
        }
        if from == 0 {
            // Nothing was held, replaced or dropped: the frame itself goes on.
            return data;
        }
        out.push(data.slice(from..));
        out.into_bytes()
    }
}

fn message_length(prefix: &[u8]) -> usize {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize
}

fn after_prefix(length: usize) -> State {
    match length {
        0 => START,
        left if left > MAX_CHECK_BYTES => State::Skip { left },
        left => State::Message { left },
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        loop {
            let Some(frame) = ready!(Pin::new(&mut self.inner).poll_frame(cx)) else {
                return Poll::Ready(None);
            };
            match frame.map(Frame::into_data) {
                Ok(Ok(data)) => {
                    let data = self.pass(data);
                    // A frame that was all skipped: read on.
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Ok(Err(trailers)) => return Poll::Ready(Some(Ok(trailers))),
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Skipping makes the body shorter, the stand-in longer: no exact size.
        SizeHint::default()
    }
}

/// The parts of a frame that go on; one part is passed as it is, more are copied together.
#[derive(Default)]
struct Pieces {
    first: Bytes,
    rest: Option<BytesMut>,
}

impl Pieces {
    fn push(&mut self, piece: Bytes) {
        if self.first.is_empty() {
            self.first = piece;
        } else if !piece.is_empty() {
            self.rest
                .get_or_insert_with(|| BytesMut::from(&self.first[..]))
                .extend_from_slice(&piece);
        }
    }

    fn into_bytes(self) -> Bytes {
        match self.rest {
            Some(joined) => joined.freeze(),
            None => self.first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: usize, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(length as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// `input` cut into frames at `cuts`, through one body; what goes on, joined.
    fn through(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut body = LimitedBody::new(());
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&input.len()]) {
            out.extend_from_slice(&body.pass(Bytes::copy_from_slice(&input[start..end])));
            start = end;
        }
        out
    }

    #[test]
    fn the_stand_in_is_a_prefixed_too_large() {
        assert_eq!(
            TOO_LARGE_MESSAGE[..PREFIX],
            message(TOO_LARGE.len(), &[])[..]
        );
        assert_eq!(TOO_LARGE_MESSAGE[PREFIX..], TOO_LARGE);
    }

    #[test]
    fn messages_within_the_limit_pass_unchanged_and_uncopied() {
        let two = [message(3, b"abc"), message(0, b""), message(2, b"de")].concat();
        let data = Bytes::from(two.clone());
        let passed = LimitedBody::new(()).pass(data.clone());
        assert_eq!(passed, data);
        assert_eq!(passed.as_ptr(), data.as_ptr(), "copied");
        // Cut anywhere, even inside a prefix: the same bytes.
        for cut in 0..two.len() {
            assert_eq!(through(&two, &[cut]), two, "cut at {cut}");
        }
        assert_eq!(through(&two, &(1..two.len()).collect::<Vec<_>>()), two);
    }

    #[test]
    fn a_message_over_the_limit_is_replaced_and_dropped_as_it_arrives() {
        let payload = vec![7; 64];
        let over = message(MAX_CHECK_BYTES + 1, &payload);
        let mut body = LimitedBody::new(());
        assert_eq!(body.pass(Bytes::from(over)), TOO_LARGE_MESSAGE[..]);
        assert_eq!(
            body.state,
            State::Skip {
                left: MAX_CHECK_BYTES + 1 - payload.len()
            }
        );
        assert!(body.pass(Bytes::from(payload.clone())).is_empty());

        // The message after it passes, whatever the cuts.
        let input = [
            message(MAX_CHECK_BYTES + 1, &vec![1; MAX_CHECK_BYTES + 1]),
            message(2, b"ok"),
        ]
        .concat();
        let expected = [&TOO_LARGE_MESSAGE[..], &message(2, b"ok")].concat();
        for cuts in [
            vec![],
            vec![3],
            vec![5, 100],
            vec![1, 2, 3, 4, 5, input.len() - 4],
        ] {
            assert_eq!(through(&input, &cuts), expected, "cuts {cuts:?}");
        }
    }

    proptest::proptest! {
        /// Any messages within the limit, then one over it cut short, in frames cut anywhere:
        /// the messages as they were, the stand-in, and nothing of the dropped bytes.
        #[test]
        fn any_cuts_give_the_same_messages(
            payloads in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..40), 0..6),
            over in proptest::collection::vec(9u8..10, 0..40),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let within: Vec<u8> = payloads.iter().flat_map(|p| message(p.len(), p)).collect();
            let input = [within.clone(), message(MAX_CHECK_BYTES + 1, &over)].concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let expected = [within, TOO_LARGE_MESSAGE.to_vec()].concat();
            proptest::prop_assert_eq!(through(&input, &cuts), expected);
        }
    }

    #[test]
    fn the_limit_itself_passes() {
        let at = message(MAX_CHECK_BYTES, b"head");
        assert_eq!(through(&at, &[]), at);
        assert_eq!(through(&at, &[2]), at);
        assert!(message_length(&message(u32::MAX as usize, b"")) > MAX_CHECK_BYTES);
        assert_eq!(
            through(&message(u32::MAX as usize, b"x"), &[1]),
            TOO_LARGE_MESSAGE
        );
    }
}
