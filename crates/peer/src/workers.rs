//! A pool of threads serving detached requests.

use archipelago_protocol::{Error, ErrorCode, Op};
use crossbeam_channel::Sender;
use xseg_shm::{Detached, Request};

use crate::runtime::{Completer, Ctx, Done};

type Job = (Detached, Op, Completer);

/// Worker threads for a peer whose work blocks (storage, the mapper): the
/// loop thread detaches each request and hands it over; a worker serves it
/// with the peer's function and completes it through the [`Completer`].
/// Dropping the pool lets the workers finish what they hold, then joins
/// them.
pub struct Workers {
    name: &'static str,
    jobs: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `threads` workers (at least one) named `name-N`, each running
    /// `serve` on the requests handed to it.
    pub fn start(
        name: &'static str,
        threads: usize,
        serve: impl Fn(Op, &mut Detached) -> Done + Send + Sync + 'static,
    ) -> Workers {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let serve = std::sync::Arc::new(serve);
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let serve = serve.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for (mut req, op, completer) in rx {
                            let done = serve(op, &mut req);
                            if let Done::Failed(e) = &done {
                                log::debug!("{op} failed: {e}");
                            }
                            completer.complete(req, done);
                        }
                    })
                    .expect("spawn a worker thread")
            })
            .collect();
        Workers {
            name,
            jobs: Some(tx),
            threads,
        }
    }

    /// Hands `req` to a worker. Gives it back, failed with "shutting down",
    /// if the workers stopped.
    pub fn submit(&self, ctx: &mut Ctx<'_>, op: Op, req: Request) -> Option<(Request, Done)> {
        let req = ctx.port().detach(req);
        let jobs = self.jobs.as_ref().expect("workers run until drop");
        if let Err(err) = jobs.send((req, op, ctx.completer().clone())) {
            let (req, _, _) = err.into_inner();
            let e = Error::with(
                ErrorCode::ShuttingDown,
                format!("{} workers stopped", self.name),
            );
            return Some((req.into_request(), Done::Failed(e)));
        }
        None
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
