//! Every gRPC call and HTTP request, counted and timed: `hunt_grpc_requests_total{method,code}`
//! and `hunt_grpc_request_duration_seconds{method}`, `hunt_http_requests_total{route,status}`
//! and `hunt_http_request_duration_seconds{route}`. A gRPC call also counts as in service on its
//! connection while it runs, for the idle timer ([`crate::idle`]).
//!
//! Design constraints:
//! - Labels are bounded whatever clients send: a gRPC method is labelled by its path only when
//!   the server implements it (any answer but `UNIMPLEMENTED`), else `other`; an HTTP route by
//!   the route that matched, else `other`.
//! - A call lasts until its response body, trailers included, has been sent or dropped: a Watch
//!   is timed over its whole life, and its code is the one in its trailers.
//! - Nothing here waits: recording is a few atomic operations when the call ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame};
use tonic::codegen::http;

use crate::idle::{ConnectionInfo, InService};

/// gRPC calls answered, by `method` and `code` (counter).
pub const GRPC_REQUESTS: &str = "hunt_grpc_requests_total";
/// Time from a gRPC call's arrival to the end of its response, by `method` (histogram).
pub const GRPC_SECONDS: &str = "hunt_grpc_request_duration_seconds";
/// HTTP requests answered, by `route` and `status` (counter).
pub const HTTP_REQUESTS: &str = "hunt_http_requests_total";
/// Time from an HTTP request's arrival to its response head, by `route` (histogram).
pub const HTTP_SECONDS: &str = "hunt_http_request_duration_seconds";

/// The label of a path or route nobody serves.
const OTHER: &str = "other";
/// `UNIMPLEMENTED`: what tonic answers for a method no service has.
const UNIMPLEMENTED: i32 = 12;

/// Registers the descriptions of the request metrics with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(GRPC_REQUESTS, "gRPC calls answered, by method and code.");
    describe_histogram!(
        GRPC_SECONDS,
        Unit::Seconds,
        "Time of a gRPC call until its response ended, by method."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "Time of an HTTP request until its response head, by route."
    );
}

/// Counts and times each gRPC call, and keeps it in service on its connection until its
/// response is done.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLayer;

impl<S> tower::Layer<S> for CallLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Calls(inner)
    }
}

/// The service of [`CallLayer`].
#[derive(Debug, Clone)]
pub struct Calls<S>(S);

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for Calls<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call {
            path: request.uri().path().to_owned(),
            started: Instant::now(),
            code: None,
            _serving: request
                .extensions()
                .get::<ConnectionInfo>()
                .map(|info| info.activity.serving()),
        };
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut call = call;
            // A refusal before the handler ran, or an error of a unary call, comes as
            // trailers-only: the status is in the head.
            call.code = grpc_status(response.headers());
            Ok(response.map(|body| tonic::body::Body::new(Tracked { body, call })))
        })
    }
}

/// One call in progress; recorded when dropped.
struct Call {
    path: String,
    started: Instant,
    code: Option<i32>,
    _serving: Option<InService>,
}

impl Drop for Call {
    fn drop(&mut self) {
        // No status at all: the response was cut off (the client went away, say).
        let code = self.code.unwrap_or(1);
        let method = if code == UNIMPLEMENTED {
            OTHER.to_owned()
        } else {
            std::mem::take(&mut self.path)
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        metrics::counter!(GRPC_REQUESTS, "method" => method.clone(), "code" => code_name(code))
            .increment(1);
        metrics::histogram!(GRPC_SECONDS, "method" => method).record(elapsed);
    }
}

/// A response body that keeps its call open until it is dropped, and reads the call's status
/// from its trailers.
struct Tracked {
    body: tonic::body::Body,
    call: Call,
}

impl Body for Tracked {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc_status(trailers)
        {
            self.call.code = Some(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// The name gRPC gives a status code.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Axum middleware counting and timing each HTTP request by the route that matched.
pub async fn http_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| OTHER.to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(HTTP_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    response
}
