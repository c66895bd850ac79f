//! The authentication layer of the public gRPC service: takes the `authorization`
//! metadata and the connection's verified client certificate, asks
//! [`crate::auth::Authenticator`] who is calling, and puts the [`crate::auth::Identity`]
//! into the request extensions for the handlers. A refusal is answered here, before the
//! request is decoded, with the status [`ApiError::Auth`] maps to.
//!
//! It must not authorise (roles and tenants are the handlers' business) nor hold any
//! credential logic: that is `crate::auth`.

use crate::api::error::ApiError;
use crate::auth::Authenticator;
use crate::tls::serve::TlsPeer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http;

/// Tower layer resolving each request to an [`Identity`] (see [`Authenticator`]). With
/// none (auth disabled) it passes every request through untouched.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    /// The inner future itself, or the refusal: no box per request.
    type Future = AuthFuture<S::Future, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if let Some(auth) = &self.auth {
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            let client_cert = request
                .extensions()
                .get::<TlsPeer>()
                .and_then(|peer| peer.client_cert.as_deref());
            match auth.authenticate(authorization, client_cert) {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                }
                Err(error) => {
                    tracing::debug!(%error, "request refused by authentication");
                    let status = ApiError::Auth(error).into_status();
                    return AuthFuture::Refused {
                        response: Some(Ok(status.into_http::<ResBody>())),
                    };
                }
            }
        }
        AuthFuture::Admitted {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`AuthService`]: the inner service's, or the refusal.
    #[project = AuthProj]
    pub enum AuthFuture<F, T> {
        Admitted { #[pin] inner: F },
        Refused { response: Option<T> },
    }
}

impl<F: Future<Output = T>, T> Future for AuthFuture<F, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            AuthProj::Admitted { inner } => inner.poll(cx),
            // Polled again after it answered: it stays pending, as a fused future would.
            AuthProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(response),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}
