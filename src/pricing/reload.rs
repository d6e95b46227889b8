//! Hot reload: the rules directory is polled, and a changed directory is compiled as a whole.
//! A load that fails keeps the previous rules serving and records why.
//!
//! Polling every `interval` rather than inotify: it works on every filesystem, including bind
//! mounts and ConfigMaps that swap symlinks. The signature is each file's name and a blake3 of
//! its contents: rule files are small, and an edit that keeps the size within one mtime tick
//! must still be seen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::expr::ExprEnv;
use super::rules::{LoadOptions, RuleErrors, RuleSet, load_dir, rule_files};

/// The current rules, shared by every request. Reads take a brief lock to clone an `Arc`.
#[derive(Clone)]
pub struct RulesHandle {
    inner: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    env: ExprEnv,
    opts: LoadOptions,
    current: RwLock<Arc<RuleSet>>,
    status: RwLock<ReloadStatus>,
    /// Edits from the console, one at a time.
    edits: Mutex<()>,
    /// A candidate rule set pricing live traffic alongside, never charged.
    shadow: RwLock<Option<Arc<super::shadow::Shadow>>>,
}

#[derive(Clone, Debug, Default)]
pub struct ReloadStatus {
    /// How many rule sets have been loaded successfully (1 after start-up).
    pub generation: u64,
    /// Why the last reload failed, while the previous rules keep serving.
    pub last_error: Option<String>,
}

type Signature = Vec<(PathBuf, Option<[u8; 32]>)>;

impl RulesHandle {
    /// Loads the directory once; start-up fails on a broken rule set.
    pub fn load(dir: &Path, env: ExprEnv, opts: LoadOptions) -> Result<RulesHandle, RuleErrors> {
        let set = load_dir(dir, &env, &opts)?;
        Ok(RulesHandle {
            inner: Arc::new(Shared {
                dir: dir.to_path_buf(),
                env,
                opts,
                current: RwLock::new(Arc::new(set)),
                status: RwLock::new(ReloadStatus {
                    generation: 1,
                    last_error: None,
                }),
                edits: Mutex::new(()),
                shadow: RwLock::new(None),
            }),
        })
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn env(&self) -> &ExprEnv {
        &self.inner.env
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &LoadOptions {
        &self.inner.opts
    }

    /// The running price experiment, if any.
    pub fn shadow(&self) -> Option<Arc<super::shadow::Shadow>> {
        self.inner
            .shadow
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_shadow(&self, s: Option<Arc<super::shadow::Shadow>>) {
        *self.inner.shadow.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub(super) fn edit_lock(&self) -> MutexGuard<'_, ()> {
        self.inner.edits.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> ReloadStatus {
        self.inner
            .status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Recompiles the directory now. On success the new rules serve the next request.
    pub fn reload(&self) -> Result<(), RuleErrors> {
        let result = load_dir(&self.inner.dir, &self.inner.env, &self.inner.opts);
        let mut status = self.inner.status.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                status.generation += 1;
                status.last_error = None;
                tracing::info!(generation = status.generation, dir = %self.inner.dir.display(), "pricing rules reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(dir = %self.inner.dir.display(), errors = %e, "pricing rules reload failed; previous rules keep serving");
                status.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn signature(&self) -> Signature {
        let files = rule_files(&self.inner.dir).unwrap_or_default();
        files
            .into_iter()
            .map(|f| {
                let digest = std::fs::read(&f)
                    .ok()
                    .map(|bytes| *blake3::hash(&bytes).as_bytes());
                (f, digest)
            })
            .collect()
    }

    /// Polls the directory until the returned task is aborted.
    pub fn spawn_watcher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        // Taken now, not in the task: an edit made right after this call must count as a change.
        let mut last = handle.signature();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sig = handle.signature();
                if sig != last {
                    last = sig;
                    // Compiling runs CEL's parser: keep it off the async workers.
                    let h = handle.clone();
                    let _ = tokio::task::spawn_blocking(move || h.reload()).await;
                }
            }
        })
    }
}
