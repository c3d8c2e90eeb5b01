//! S3 for the tests: an in-process S3 server (s3s-fs) that verifies SigV4, or, when
//! `TEST_S3_ENDPOINT` is set, an external S3-compatible server (CI runs SeaweedFS). Each test
//! gets a bucket of its own.

use std::path::PathBuf;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;

const IN_PROCESS_KEY: &str = "test-access-key";
const IN_PROCESS_SECRET: &str = "test-secret-key-0123456789";

pub struct TestS3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    in_process: Option<InProcess>,
}

struct InProcess {
    root: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

impl TestS3 {
    pub async fn start() -> TestS3 {
        let bucket = format!("test-{}", uuid::Uuid::new_v4().simple());
        let s3 = match std::env::var("TEST_S3_ENDPOINT") {
            Ok(endpoint) => TestS3 {
                endpoint,
                bucket,
                access_key: std::env::var("TEST_S3_ACCESS_KEY").expect("TEST_S3_ACCESS_KEY"),
                secret_key: std::env::var("TEST_S3_SECRET_KEY").expect("TEST_S3_SECRET_KEY"),
                in_process: None,
            },
            Err(_) => {
                let root = tempfile::tempdir().unwrap();
                let (endpoint, stop) = serve(root.path().to_path_buf(), None).await;
                TestS3 {
                    endpoint,
                    bucket,
                    access_key: IN_PROCESS_KEY.into(),
                    secret_key: IN_PROCESS_SECRET.into(),
                    in_process: Some(InProcess { root, stop }),
                }
            }
        };
        s3.client()
            .create_bucket()
            .bucket(&s3.bucket)
            .send()
            .await
            .expect("creating a test bucket");
        s3
    }

    pub fn is_in_process(&self) -> bool {
        self.in_process.is_some()
    }

    /// The settings that point the server at this bucket.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_S3_BUCKET_NAME", self.bucket.clone()),
            ("AWS_S3_ENDPOINT", self.endpoint.clone()),
            ("AWS_S3_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .build();
        Client::from_conf(config)
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub async fn pending_multipart_uploads(&self) -> usize {
        match &self.in_process {
            // s3s-fs keeps an upload's state as `.upload-*` files in its root until it ends.
            Some(p) => std::fs::read_dir(p.root.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".upload")
                })
                .count(),
            None => {
                let listed = self
                    .client()
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .unwrap();
                listed.uploads().len()
            }
        }
    }

    /// Stops the in-process server: the listener closes and open connections drop.
    pub fn stop(&self) {
        let p = self
            .in_process
            .as_ref()
            .expect("only the in-process server can be stopped");
        let _ = p.stop.send(true);
    }

    /// Starts the in-process server again on the same port and data.
    pub async fn restart(&mut self) {
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let p = self.in_process.as_mut().expect("in-process only");
        let (_, stop) = serve(p.root.path().to_path_buf(), Some(port)).await;
        p.stop = stop;
    }
}

async fn serve(root: PathBuf, port: Option<u16>) -> (String, watch::Sender<bool>) {
    let fs = s3s_fs::FileSystem::new(&root).unwrap();
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(IN_PROCESS_KEY, IN_PROCESS_SECRET));
    let service = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .await
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut stopped_accepting = stopped.clone();
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
                _ = stopped_accepting.changed() => return,
            };
            let service = service.clone();
            let mut stopped_serving = stopped.clone();
            tokio::spawn(async move {
                let connection = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                tokio::select! {
                    _ = connection => {}
                    _ = stopped_serving.changed() => {}
                }
            });
        }
    });
    (endpoint, stop)
}
