//! Argon2id password hashes (PHC strings with their own salt and parameters), computed on a
//! fixed pool of threads that each keep their Argon2 memory.
//!
//! Why a pool of its own: Argon2id needs 19 MiB per hash. Allocated per hash on the blocking
//! pool, those blocks end up kept by the allocator's per-thread arenas (glibc raises its
//! mmap threshold after the first free), so a few hundred logins left the server holding
//! hundreds of megabytes. Here `PASSWORD_HASH_CONCURRENCY` threads each allocate their
//! blocks once and reuse them (`hash_password_into_with_memory`): the memory is bounded by
//! the pool's size, and a flood of logins waits in the pool's queue instead of taking every
//! core from the rest of the server.

use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{mpsc, oneshot};

use crate::error::AppError;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Hashing is deliberately slow; refuse megabyte "passwords" before doing it.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Hashes waiting for a thread at most; more callers wait to enqueue.
const QUEUE: usize = 256;

/// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::default()
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing threads. Cloneable; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct PasswordHashing {
    jobs: mpsc::Sender<Job>,
}

impl PasswordHashing {
    /// Starts `threads` hashing threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<PasswordHashing> {
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    // Allocated on first use and kept: the point of the pool.
                    let mut memory = Vec::new();
                    loop {
                        let job = queue
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .blocking_recv();
                        match job {
                            Some(job) => job(&mut memory),
                            None => return,
                        }
                    }
                })?;
        }
        Ok(PasswordHashing { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (answer, answered) = oneshot::channel();
        // The request's span (its id) follows the work.
        let span = tracing::Span::current();
        let job: Job = Box::new(move |memory| {
            let _entered = span.enter();
            let _ = answer.send(work(memory));
        });
        let stopped = || AppError::Internal(anyhow::anyhow!("the password hashing pool stopped"));
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())
    }

    /// A new PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.run(move |memory| hash_with(memory, &password))
            .await?
            .map_err(AppError::Internal)
    }

    /// Whether `password` matches `phc_hash`. With no hash (an unknown user) a dummy is
    /// checked instead, so the answer takes as long whether or not the account exists.
    pub async fn verify(
        &self,
        password: String,
        phc_hash: Option<String>,
    ) -> Result<bool, AppError> {
        self.run(move |memory| match phc_hash {
            Some(hash) => verify_with(memory, &password, &hash),
            None => {
                let _ = verify_with(memory, &password, &DUMMY);
                false
            }
        })
        .await
    }
}

static DUMMY: LazyLock<String> = LazyLock::new(|| {
    hash_with(&mut Vec::new(), "not-a-real-password").expect("hashing a constant")
});

/// `memory` grown to at least `blocks` blocks (it never shrinks).
fn blocks(memory: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

fn hash_with(memory: &mut Vec<Block>, password: &str) -> anyhow::Result<String> {
    let params = params();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("decoding a salt: {e}"))?;
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt_bytes,
            &mut out,
            blocks(memory, params.block_count()),
        )
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|e| anyhow::anyhow!("encoding parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("encoding a hash: {e}"))?),
    };
    Ok(phc.to_string())
}

fn verify_with(memory: &mut Vec<Block>, password: &str, phc_hash: &str) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(phc_hash).ok()?;
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return None;
        }
        let params = Params::try_from(&parsed).ok()?;
        let version = Version::try_from(parsed.version.unwrap_or(0x13)).ok()?;
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let mut out = vec![0u8; expected.len()];
        let argon2 = Argon2::new(Algorithm::Argon2id, version, params.clone());
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                blocks(memory, params.block_count()),
            )
            .ok()?;
        // Output's comparison runs in constant time.
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let pool = PasswordHashing::start(1).unwrap();
        let h = pool.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let verify = |password: &str, hash: Option<&str>| {
            pool.verify(password.into(), hash.map(str::to_owned))
        };
        assert!(verify("correct horse", Some(&h)).await.unwrap());
        assert!(!verify("wrong horse", Some(&h)).await.unwrap());
        assert!(!verify("correct horse", Some("not a hash")).await.unwrap());
        assert!(!verify("correct horse", None).await.unwrap());
    }

    /// Hashes made by the argon2 crate's own `PasswordHasher` (as stored before the pool)
    /// still verify, and ours verify with it.
    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = argon2
            .hash_password(b"pw-123456", &salt)
            .unwrap()
            .to_string();
        let pool = PasswordHashing::start(1).unwrap();
        assert!(pool.verify("pw-123456".into(), Some(theirs)).await.unwrap());
        let ours = pool.hash("pw-123456".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2.verify_password(b"pw-123456", &parsed).is_ok());
    }
}
