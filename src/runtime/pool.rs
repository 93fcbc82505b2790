//! One glommio executor per CPU, each pinned, each running the same per-core future.

use std::future::Future;
use std::io;

use glommio::{LocalExecutorBuilder, Placement};

/// Registered io_uring buffer memory per executor. glommio's default (10 MiB) needs more locked
/// memory than an unprivileged 8 MiB memlock limit allows for even one core; the server reads and
/// writes through ordinary buffers, so a small pool is enough.
const IO_MEMORY: usize = 512 * 1024;

/// The CPUs this process may run on, in ascending order (its affinity mask, not every online CPU).
pub(crate) fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus.sort_unstable();
    cpus
}

/// Running executors; [`CorePool::join`] waits for every one to return.
pub(crate) struct CorePool {
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl CorePool {
    /// Spawns one executor pinned to each of `cpus`; executor `i` runs `per_core(i)`.
    ///
    /// If one fails to start, the ones already started are left to finish on their own: the caller
    /// must make them return (their shutdown doorbells are dropped with the caller's state).
    pub(crate) fn spawn<F, Fut>(name: &str, cpus: &[usize], per_core: F) -> io::Result<CorePool>
    where
        F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let mut handles = Vec::with_capacity(cpus.len());
        let mut ready = Vec::with_capacity(cpus.len());
        for (index, &cpu) in cpus.iter().enumerate() {
            let per_core = per_core.clone();
            // The executor says it runs by sending on its own channel; if it fails to start (no
            // io_uring, memlock too small) its thread ends and drops the sender instead.
            let (started, is_started) = std::sync::mpsc::channel::<()>();
            let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("{name}-{index}"))
                .io_memory(IO_MEMORY)
                .spawn(move || {
                    let _ = started.send(());
                    per_core(index)
                })
                .map_err(|e| io::Error::other(format!("cannot start executor {index} on CPU {cpu}: {e}")))?;
            handles.push(handle);
            ready.push((index, cpu, is_started));
        }
        let mut failed = None;
        for (index, cpu, is_started) in ready {
            if is_started.recv().is_err() {
                failed.get_or_insert((index, cpu));
            }
        }
        if let Some((index, cpu)) = failed {
            let mut reason = String::from("it stopped before running");
            // Only the failed executor has ended; the others end when the caller drops their
            // shutdown doorbells, so joining them here would wait forever.
            if let Some(handle) = handles.into_iter().nth(index) {
                if let Err(e) = handle.join() {
                    reason = e.to_string();
                }
            }
            return Err(io::Error::other(format!(
                "executor {index} on CPU {cpu} did not start: {reason} (check `ulimit -l`: each executor locks about 1.5 MiB for io_uring)"
            )));
        }
        Ok(CorePool { handles })
    }

    /// Number of executors.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Waits for every executor to return; reports the first that failed.
    pub(crate) fn join(self) -> io::Result<()> {
        let mut first_error = None;
        for (index, handle) in self.handles.into_iter().enumerate() {
            if let Err(e) = handle.join() {
                first_error.get_or_insert(io::Error::other(format!("executor {index} failed: {e}")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn every_cpu_runs_its_own_executor_with_its_index() {
        let cpus = available_cpus();
        let seen = Arc::new(AtomicUsize::new(0));
        let pool = CorePool::spawn("test", &cpus, {
            let seen = seen.clone();
            move |index| {
                let seen = seen.clone();
                async move {
                    seen.fetch_or(1 << index, Ordering::SeqCst);
                }
            }
        })
        .unwrap();
        assert_eq!(pool.len(), cpus.len());
        pool.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), (1 << cpus.len()) - 1);
    }
}
