//! [`Step`]: the result of one backend operation on the report path, either already
//! there or still to be awaited.
//!
//! The report pipeline is one sequence of `.await`s (`crate::pipeline`). An in-process
//! backend answers each step at once with [`Step::ready`]: awaiting it allocates
//! nothing and never suspends, so a whole report on the embedded backends runs within
//! one poll, and a client that goes away cannot leave it half done. A networked backend
//! answers with [`Step::pending`], a boxed future. Whether a step completes inline or
//! awaits is thus the backend's business, not a second copy of the flow.
//!
//! A leaf: it knows nothing of reports, stores or logs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A value now, or a future that yields it.
pub enum Step<'a, T> {
    /// Answered at once; `None` once taken.
    Ready(Option<T>),
    /// To be awaited.
    Pending(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> Step<'a, T> {
    /// A step that is already done.
    pub fn ready(value: T) -> Self {
        Step::Ready(Some(value))
    }

    /// A step that completes when `future` does.
    pub fn pending(future: impl Future<Output = T> + Send + 'a) -> Self {
        Step::Pending(Box::pin(future))
    }
}

// Neither variant is pinned in place: the value is moved out, the future is boxed.
impl<T> Unpin for Step<'_, T> {}

impl<T> Future for Step<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Step::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                // Polled again after it answered: pending, as a fused future would be.
                None => Poll::Pending,
            },
            Step::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for Step<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Ready(_) => "Step::Ready",
            Step::Pending(_) => "Step::Pending",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_ready_step_answers_on_the_first_poll_without_a_waker() {
        let mut step = Step::ready(7);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(Pin::new(&mut step).poll(&mut cx), Poll::Ready(7));
        assert_eq!(Pin::new(&mut step).poll(&mut cx), Poll::Pending);
    }

    #[tokio::test]
    async fn a_pending_step_is_its_future() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let step = Step::pending(async move { rx.await.unwrap_or(0) });
        tx.send(5).expect("send");
        assert_eq!(step.await, 5);
    }
}
