//! Attachments, against both stores (local disk and S3), on the database under test.

use std::time::Duration;

use chatserver::db::models::FileUpload;
use chatserver::db::schema::file_uploads;
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures::{self, Upload};
use crate::helpers::{
    StoreKind, TestApp, TestUser, eventually, expect_error, expect_json, for_each_store,
    recv_within, spawn_app_on, spawn_app_with,
};

for_each_store!(
    round_trips_keep_bytes_types_sizes_and_hashes,
    a_large_file_streams_through_multipart_upload,
    spoofed_types_are_refused_and_leave_nothing,
    oversize_chunked_uploads_are_refused_while_streaming,
    too_many_or_malformed_parts_are_400,
    hostile_names_are_stored_under_safe_keys_and_shown_cleaned,
    names_are_nfc_and_blank_names_are_refused,
    a_client_that_disconnects_leaves_nothing,
    a_stalled_upload_times_out_with_408_and_leaves_nothing,
    a_user_has_a_bounded_number_of_uploads_in_flight,
    a_refused_third_file_keeps_no_message_and_no_file,
    access_is_for_members_and_deletion_for_the_uploader,
    deleted_files_vanish_everywhere_and_their_links_stop,
    leaving_the_channel_stops_issued_links,
    tampered_and_expired_links_are_refused,
    attaching_to_an_existing_message,
    download_links_are_counted_and_rate_limited,
    the_sweeper_purges_deleted_and_orphaned_objects,
    the_sweeper_aborts_uploads_a_killed_instance_left,
    storage_status_is_for_admins,
    downloads_serve_byte_ranges,
);

async fn app_on(store: StoreKind) -> TestApp {
    spawn_app_on(store, &[]).await
}

/// Every row, deleted or not.
async fn rows(app: &TestApp) -> Vec<FileUpload> {
    app.state
        .db
        .run(|conn| {
            Ok(file_uploads::table
                .order(file_uploads::id)
                .select(FileUpload::as_select())
                .load(conn)?)
        })
        .await
        .unwrap()
}

/// Waits (bounded) for background clean-up to finish, then asserts the store is empty:
/// no object, no open S3 multipart upload, and no local temporary file (`files/tmp`, where
/// the local store's uploads in progress live; `objects()` lists only `files/objects`).
async fn assert_store_empties(app: &TestApp) {
    eventually(async || {
        app.object_keys().await.is_empty()
            && pending_uploads(app).await == 0
            && local_temp_files(app).is_empty()
    })
    .await;
    assert_eq!(
        app.object_keys().await,
        Vec::<String>::new(),
        "objects left behind"
    );
    assert_eq!(pending_uploads(app).await, 0, "multipart uploads left open");
    assert_eq!(
        local_temp_files(app),
        Vec::<String>::new(),
        "temporary files left behind in files/tmp"
    );
}

async fn pending_uploads(app: &TestApp) -> usize {
    match &app.s3 {
        Some(s3) => s3.pending_multipart_uploads().await,
        None => 0,
    }
}

/// Opens a download link one hop at a time (`TestApp::client` follows no redirect),
/// checking the hop each store documents: the local store answers with the bytes; S3 with
/// a `302` to a presigned URL that lives at most 60 s and tells S3 which type, disposition
/// and caching to answer with (`response-content-*`). Returns the response carrying the
/// bytes: the server's, or S3's.
async fn open_link(app: &TestApp, url: &str, range: Option<&str>) -> reqwest::Response {
    let get = |url: &str| {
        let mut request = app.client.get(url);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };
    let response = get(url).await.unwrap();
    let Some(s3) = &app.s3 else {
        return response;
    };
    assert_eq!(response.status(), StatusCode::FOUND, "an S3 link redirects");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&s3.endpoint), "{location}");
    let query: std::collections::HashMap<String, String> = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let lifetime: u64 = query["X-Amz-Expires"].parse().unwrap();
    assert!(
        (1..=60).contains(&lifetime),
        "the presigned URL lives {lifetime} s, documented at most 60"
    );
    for asked in ["response-content-type", "response-content-disposition"] {
        assert!(query.contains_key(asked), "{asked} missing from {location}");
    }
    assert_eq!(query["response-cache-control"], "private, no-store");
    let served = get(&location).await.unwrap();
    // What S3 answers is what the link asked for.
    let headers = served.headers();
    assert_eq!(
        headers["content-type"],
        query["response-content-type"].as_str()
    );
    assert_eq!(
        headers["content-disposition"],
        query["response-content-disposition"].as_str()
    );
    served
}

/// Asserts the documented download headers on a response that carries a file's bytes,
/// from either store.
fn assert_download_headers(
    store: StoreKind,
    headers: &reqwest::header::HeaderMap,
    content_type: &str,
    encoded_name: &str,
) {
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with(content_type),
        "{headers:?}"
    );
    let disposition = headers["content-disposition"].to_str().unwrap();
    let inline = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| content_type.starts_with(p));
    let kind = if inline { "inline;" } else { "attachment;" };
    assert!(disposition.starts_with(kind), "{disposition}");
    // RFC 6266 with the exact name in RFC 5987 form.
    assert!(
        disposition.contains(&format!("filename*=UTF-8''{encoded_name}")),
        "{disposition}"
    );
    assert_eq!(headers["cache-control"], "private, no-store");
    if store == StoreKind::Local {
        // Only a response of the server's own can carry these; S3 answers with its own.
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("sandbox"), "{csp}");
    }
}

/// GETs a download link like a plain client: no headers, following redirects.
async fn fetch(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn round_trips_keep_bytes_types_sizes_and_hashes(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    let mut events = app.events().await;
    let uploads = [
        (
            Upload::new("photo.png", "image/png", fixtures::png(40_000)),
            "image/png",
        ),
        (
            Upload::new("photo.jpg", "image/jpeg", fixtures::jpeg(30_000)),
            "image/jpeg",
        ),
        (
            Upload::new("paper.pdf", "application/pdf", fixtures::pdf(20_000)),
            "application/pdf",
        ),
        (
            Upload::new(
                "letter.docx",
                "application/octet-stream",
                fixtures::docx(10_000),
            ),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            Upload::new("song.mp3", "audio/mpeg", fixtures::mp3(50_000)),
            "audio/mpeg",
        ),
        (
            Upload::new("clip.mp4", "video/mp4", fixtures::mp4(60_000)),
            "video/mp4",
        ),
        (
            Upload::new("table.csv", "text/csv", fixtures::csv()),
            "text/csv",
        ),
        (
            Upload::new("notes.txt", "text/plain", fixtures::text()),
            "text/plain",
        ),
    ];
    let files: Vec<Upload> = uploads
        .iter()
        .map(|(u, _)| Upload::new(&u.name, &u.declared_type, u.bytes.clone()))
        .collect();
    let message = expect_json(
        app.post_files(&alice, channel, "see attached", &files)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(message["content"], "see attached");
    let listed = message["files"].as_array().unwrap();
    assert_eq!(listed.len(), uploads.len());

    let stored = rows(&app).await;
    for ((upload, sniffed), (file, row)) in uploads.iter().zip(listed.iter().zip(&stored)) {
        assert_eq!(file["file_name"], upload.name.as_str());
        assert_eq!(file["content_type"], *sniffed, "{}", upload.name);
        assert_eq!(file["file_size"], upload.bytes.len() as u64);
        assert_eq!(file["message_id"], message["id"]);
        assert_eq!(file["channel_id"], channel);
        assert_eq!(file["uploaded_by"], alice.id);
        assert!(file["url_expires_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            row.sha256.as_deref(),
            Some(sha256_hex(&upload.bytes).as_str())
        );
        assert_eq!(row.file_size, Some(upload.bytes.len() as i64));
        assert!(
            !row.s3_key.contains(upload.name.split('.').next().unwrap()),
            "key {} derived from the name",
            row.s3_key
        );
        let prefix = app.state.store.owned_prefix();
        assert!(
            row.s3_key
                .starts_with(&format!("{prefix}channels/{channel}/"))
        );

        // B, another member, downloads through their own fresh link.
        let link = expect_json(
            app.get(&format!("/api/files/download/{}", file["id"]), &bob.token)
                .await,
            StatusCode::OK,
        )
        .await;
        let response = open_link(&app, link["url"].as_str().unwrap(), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", upload.name);
        assert_download_headers(store, response.headers(), sniffed, &upload.name);
        assert_eq!(
            response.bytes().await.unwrap(),
            upload.bytes,
            "{}",
            upload.name
        );
        // The link in the listing works too.
        assert_eq!(
            fetch(file["url"].as_str().unwrap())
                .await
                .bytes()
                .await
                .unwrap(),
            upload.bytes
        );
    }
    assert_eq!(app.object_keys().await.len(), uploads.len());

    // The listing joins the files onto the message, in upload order.
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    let names: Vec<&str> = page["messages"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        uploads
            .iter()
            .map(|(u, _)| u.name.as_str())
            .collect::<Vec<_>>()
    );

    // One message_created, then exactly one file_upload_complete per file.
    let first = app.render(&recv_within(&mut events, "message_created").await, &bob);
    assert_eq!(first["type"], "message_created");
    assert_eq!(
        first["data"]["files"].as_array().unwrap().len(),
        uploads.len()
    );
    for file in listed {
        let event = app.render(
            &recv_within(&mut events, "file_upload_complete").await,
            &bob,
        );
        assert_eq!(event["type"], "file_upload_complete");
        assert_eq!(event["data"]["id"], file["id"]);
        let url = event["data"]["url"].as_str().unwrap();
        assert_eq!(fetch(url).await.status(), StatusCode::OK);
    }
    app.assert_no_more_events(&mut events, &alice, channel)
        .await;
}

async fn a_large_file_streams_through_multipart_upload(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    // Over two 8 MiB parts, ending mid-part.
    let big = fixtures::mp4(19 * 1024 * 1024 + 12_345);
    let message = expect_json(
        app.post_files(
            &alice,
            channel,
            "",
            &[Upload::new("big.mp4", "video/mp4", big.clone())],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(message["content"], "");
    let file = &message["files"][0];
    assert_eq!(file["file_size"], big.len() as u64);
    let link = expect_json(
        app.get(&format!("/api/files/download/{}", file["id"]), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    let downloaded = fetch(link["url"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    assert!(downloaded == big, "the large file came back different");
    assert_eq!(
        rows(&app).await[0].sha256.as_deref(),
        Some(sha256_hex(&big).as_str())
    );
    assert_eq!(pending_uploads(&app).await, 0);
}

async fn spoofed_types_are_refused_and_leave_nothing(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let spoofs = [
        Upload::new(
            "cat.png",
            "image/png",
            b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>".to_vec(),
        ),
        Upload::new(
            "logo.svg",
            "image/svg+xml",
            br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec(),
        ),
        Upload::new(
            "anim.gif",
            "image/gif",
            b"GIF89a<script>alert(document.domain)</script>".to_vec(),
        ),
        Upload::new("holiday.jpg", "image/jpeg", fixtures::elf()),
        Upload::new(
            "mystery.bin",
            "application/octet-stream",
            fixtures::filler(5000, 9),
        ),
    ];
    for spoof in spoofs {
        let name = spoof.name.clone();
        let response = app.post_files(&alice, channel, "look", &[spoof]).await;
        let body = expect_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_file_type",
        )
        .await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains("type"),
            "{name}: {body}"
        );
    }
    assert!(rows(&app).await.is_empty());
    assert_store_empties(&app).await;
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"], json!([]), "no message either");
}

/// A chunked body (no Content-Length) over the limit is refused while it streams: the
/// client sends 2 MiB of a 1 MiB limit and then holds the body open, unfinished. The `413`
/// must arrive while the body is still open; a server that read to the end first would
/// never answer, and the test fails at its deadline. (Holding the body open is also what
/// lets the client read the answer at all: a client still pushing megabytes at a server
/// that has stopped reading can see its write fail before it sees the response.)
async fn oversize_chunked_uploads_are_refused_while_streaming(store: StoreKind) {
    let app = spawn_app_on(store, &[("MAX_FILE_SIZE_MB", "1")]).await;
    let (alice, _, channel) = app.two_members().await;
    let boundary = "XyZbOuNdArY";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nbig\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\
         Content-Type: video/mp4\r\n\r\n"
    );
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let request = app
        .client
        .post(app.url(&format!("/api/channels/{channel}/messages")))
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(tokio_stream_from(receiver)))
        .send();
    let response = tokio::spawn(request);
    // 2 MiB of file, over the limit, then the body stays open. In a task of its own: the
    // server may stop reading anywhere past the limit, and then a send waits for ever.
    let feeder = tokio::spawn(async move {
        sender.send(Ok(head.into_bytes())).await.unwrap();
        sender.send(Ok(fixtures::mp4(1024))).await.unwrap();
        for i in 0..32 {
            if sender
                .send(Ok(fixtures::filler(64 * 1024, i)))
                .await
                .is_err()
            {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    let answered = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no answer while the body was still open: it was not refused while streaming")
        .unwrap()
        .expect("the answer, not a transport error");
    assert!(!feeder.is_finished(), "the body was still open");
    expect_error(answered, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    feeder.abort();
    assert!(rows(&app).await.is_empty());
    assert_store_empties(&app).await;
}

async fn too_many_or_malformed_parts_are_400(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let eleven: Vec<Upload> = (0..11)
        .map(|i| Upload::new(&format!("{i}.txt"), "text/plain", fixtures::text()))
        .collect();
    expect_error(
        app.post_files(&alice, channel, "many", &eleven).await,
        StatusCode::BAD_REQUEST,
        "too_many_files",
    )
    .await;

    let ten: Vec<Upload> = (0..10)
        .map(|i| Upload::new(&format!("{i}.txt"), "text/plain", fixtures::text()))
        .collect();
    expect_json(
        app.post_files(&alice, channel, "ten is fine", &ten).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(rows(&app).await.len(), 10);

    let path = app.url(&format!("/api/channels/{channel}/messages"));
    let bodies = [
        ("multipart/form-data; boundary=abc", "this is not multipart at all".to_string()),
        ("multipart/form-data", "--abc\r\n\r\n".to_string()),
        ("multipart/form-data; boundary=abc", "--abc\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nhi\r\n--abc\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nunterminated".to_string()),
        ("multipart/form-data; boundary=abc", "--abc\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nhi\r\n--abc\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.txt\"\r\n\r\nx\r\n--abc--\r\n".to_string()),
        ("multipart/form-data; boundary=abc", "--abc\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nx\r\n--abc--\r\n".to_string()),
    ];
    for (content_type, body) in bodies {
        let response = app
            .client
            .post(&path)
            .bearer_auth(&alice.token)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    // Endless part headers are cut off.
    let endless = format!("--abc\r\nX-Filler: {}", "a".repeat(2 * 1024 * 1024));
    let response = app
        .client
        .post(&path)
        .bearer_auth(&alice.token)
        .header("content-type", "multipart/form-data; boundary=abc")
        .body(endless)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;

    assert_eq!(rows(&app).await.len(), 10, "nothing more was recorded");
    eventually(async || app.object_keys().await.len() == 10).await;
    assert_eq!(app.object_keys().await.len(), 10, "nothing more was stored");
}

async fn names_are_nfc_and_blank_names_are_refused(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    // A macOS browser sends names decomposed: "e" + U+0301.
    let message = expect_json(
        app.post_files(
            &alice,
            channel,
            "notes",
            &[Upload::new(
                "Rene\u{301}e notes.txt",
                "text/plain",
                fixtures::text(),
            )],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(message["files"][0]["file_name"], "Ren\u{e9}e notes.txt");
    // Downloads name it exactly, in RFC 5987 form, whichever store serves it.
    let url = message["files"][0]["url"].as_str().unwrap();
    let served = open_link(&app, url, None).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_download_headers(
        store,
        served.headers(),
        "text/plain",
        "Ren%C3%A9e%20notes.txt",
    );

    if let Some(s3) = &app.s3 {
        // The object itself says what it is and how it downloads, for any link to it.
        let key = rows(&app).await[0].s3_key.clone();
        let head = s3
            .client()
            .head_object()
            .bucket(&app.state.settings.store.s3.as_ref().unwrap().bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("text/plain"));
        let disposition = head.content_disposition().unwrap();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(
            disposition.contains("filename*=UTF-8''Ren%C3%A9e%20notes.txt"),
            "{disposition}"
        );
    }

    let before = app.object_keys().await;
    for blank in ["\u{200B}\u{200B}", "\u{3164}"] {
        let refused = app
            .post_files(
                &alice,
                channel,
                "blank",
                &[Upload::new(blank, "text/plain", fixtures::text())],
            )
            .await;
        expect_error(refused, StatusCode::BAD_REQUEST, "invalid_file_name").await;
    }
    assert_eq!(
        app.object_keys().await,
        before,
        "a refused name stores nothing"
    );
    assert_eq!(rows(&app).await.len(), 1);
}

async fn hostile_names_are_stored_under_safe_keys_and_shown_cleaned(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let long = format!("{}.txt", "n".repeat(300));
    let cases = [
        ("../../etc/passwd", fixtures::text(), "passwd"),
        ("a.php%00.jpg", fixtures::jpeg(100), "a.php%00.jpg"),
        (
            "invoice\u{202e}fdp.exe",
            fixtures::pdf(100),
            "invoicefdp.exe",
        ),
        (long.as_str(), fixtures::text(), ""),
    ];
    for (name, bytes, shown) in cases {
        let message = expect_json(
            app.post_files(
                &alice,
                channel,
                "named",
                &[Upload::new(name, "application/octet-stream", bytes)],
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        let file_name = message["files"][0]["file_name"].as_str().unwrap();
        if shown.is_empty() {
            assert_eq!(file_name.chars().count(), 255);
            assert!(file_name.ends_with(".txt"));
        } else {
            assert_eq!(file_name, shown);
        }
    }
    let prefix = app.state.store.owned_prefix();
    let pattern = |key: &str| {
        let Some(key) = key.strip_prefix(&prefix) else {
            return false;
        };
        let parts: Vec<&str> = key.split('/').collect();
        parts.len() == 6
            && parts[0] == "channels"
            && parts[1..5]
                .iter()
                .all(|p| p.chars().all(|c| c.is_ascii_digit()))
            && parts[5].len() <= 41
            && parts[5]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '.' || c.is_ascii_lowercase())
    };
    for row in rows(&app).await {
        assert!(pattern(&row.s3_key), "unsafe key {}", row.s3_key);
    }
}

async fn a_client_that_disconnects_leaves_nothing(store: StoreKind) {
    use tokio::io::AsyncWriteExt;
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let mut socket = stalled_upload(&app, &alice, channel, 1024).await;
    // Past the first 8 MiB part, so S3 has a multipart upload open.
    for i in 0..(10 * 16) {
        socket
            .write_all(&fixtures::filler(64 * 1024, i))
            .await
            .unwrap();
    }
    // What the test is named for: the client goes while its file is being written to the
    // store (an open multipart upload on S3, a temporary file on the local store).
    let under_way = async || match app.s3 {
        Some(_) => pending_uploads(&app).await == 1,
        None => local_temp_files(&app).len() == 1,
    };
    assert!(
        eventually(under_way).await,
        "the upload never reached the store"
    );
    drop(socket);
    assert_store_empties(&app).await;
    assert!(rows(&app).await.is_empty());
}

/// Opens a multipart message upload and sends `file_bytes` of a file part, then nothing
/// more (the socket stays open).
async fn stalled_upload(
    app: &TestApp,
    user: &TestUser,
    channel: i64,
    file_bytes: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let boundary = "slowslowslow";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nslow\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n\r\n"
    );
    let port = app.address.rsplit(':').next().unwrap();
    let mut socket = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let request = format!(
        "POST /api/channels/{channel}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        user.token,
        64 * 1024 * 1024
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&fixtures::mp4(file_bytes)).await.unwrap();
    socket
}

/// The status line of the answer on `socket`, read within `within`.
async fn status_line(socket: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection ended without an answer");
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap().to_owned()
}

/// The local store's uploads in progress (`files/tmp`); none for S3. On the local store the
/// directory must exist: a moved one would make every "nothing left" check pass vacuously.
fn local_temp_files(app: &TestApp) -> Vec<String> {
    if app.s3.is_some() {
        return Vec::new();
    }
    let tmp = app.data_dir().join("files/tmp");
    let mut names: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap_or_else(|e| panic!("the local store's {}: {e}", tmp.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn a_stalled_upload_times_out_with_408_and_leaves_nothing(store: StoreKind) {
    let app = spawn_app_on(store, &[("BODY_IDLE_TIMEOUT_SECONDS", "1")]).await;
    let (alice, _, channel) = app.two_members().await;
    // Past the sniffing window, so the object is being written when the body stalls.
    let mut socket = stalled_upload(&app, &alice, channel, 64 * 1024).await;
    let started = std::time::Instant::now();
    let status = status_line(&mut socket, Duration::from_secs(15)).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off after the idle timeout"
    );
    assert_store_empties(&app).await;
    assert!(rows(&app).await.is_empty());
}

async fn a_user_has_a_bounded_number_of_uploads_in_flight(store: StoreKind) {
    let app = spawn_app_on(
        store,
        &[
            ("MAX_CONCURRENT_UPLOADS_PER_USER", "2"),
            ("BODY_IDLE_TIMEOUT_SECONDS", "3"),
        ],
    )
    .await;
    let (alice, bob, channel) = app.two_members().await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stalled_upload(&app, &alice, channel, 1024).await);
    }
    let alice_id = alice.id as i32;
    let both_held = async || app.state.upload_slots.held(alice_id) == 2;
    assert!(
        eventually(both_held).await,
        "the stalled uploads were never in flight"
    );
    // A third is refused at once.
    let files = [Upload::new("x.png", "image/png", fixtures::png(100))];
    expect_error(
        app.post_files(&alice, channel, "third", &files).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    // Another user is not affected.
    upload_one(&app, &bob, channel).await;
    // Once the stalled ones are cut off, alice may upload again.
    for socket in &mut stalled {
        let status = status_line(socket, Duration::from_secs(15)).await;
        assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    }
    upload_one(&app, &alice, channel).await;
}

async fn a_refused_third_file_keeps_no_message_and_no_file(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    let mut events = app.events().await;
    let files = [
        Upload::new("one.png", "image/png", fixtures::png(1000)),
        Upload::new("two.pdf", "application/pdf", fixtures::pdf(1000)),
        Upload::new("three.jpg", "image/jpeg", fixtures::elf()),
    ];
    expect_error(
        app.post_files(&alice, channel, "three files", &files).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_file_type",
    )
    .await;
    assert!(rows(&app).await.is_empty());
    assert_store_empties(&app).await;
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"], json!([]));
    // Nothing was announced: the next event is a later message's.
    app.assert_no_more_events(&mut events, &alice, channel)
        .await;
}

/// Uploads one PNG as alice and returns the file JSON.
async fn upload_one(app: &TestApp, user: &TestUser, channel: i64) -> Value {
    let message = expect_json(
        app.post_files(
            user,
            channel,
            "pic",
            &[Upload::new("pic.png", "image/png", fixtures::png(2000))],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    message["files"][0].clone()
}

async fn access_is_for_members_and_deletion_for_the_uploader(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    let mallory = app.register("mallory").await;
    let file = upload_one(&app, &alice, channel).await;
    let id = file["id"].as_i64().unwrap();

    for path in [
        format!("/api/files/{id}"),
        format!("/api/files/download/{id}"),
    ] {
        expect_error(
            app.get(&path, &mallory.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        assert_eq!(app.get(&path, &bob.token).await.status(), StatusCode::OK);
    }
    expect_error(
        app.delete(&format!("/api/files/{id}"), &mallory.token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.delete(&format!("/api/files/{id}"), &bob.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let shown = expect_json(
        app.get(&format!("/api/files/{id}"), &bob.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["file_name"], "pic.png");
    assert_eq!(
        app.delete(&format!("/api/files/{id}"), &alice.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
}

async fn deleted_files_vanish_everywhere_and_their_links_stop(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    let file = upload_one(&app, &alice, channel).await;
    let id = file["id"].as_i64().unwrap();
    let link = expect_json(
        app.get(&format!("/api/files/download/{id}"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&url).await.status(), StatusCode::OK);
    let mut events = app.events().await;

    assert_eq!(
        app.delete(&format!("/api/files/{id}"), &alice.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let event = app.render(&recv_within(&mut events, "file_deleted").await, &bob);
    assert_eq!(event["type"], "file_deleted");
    assert_eq!(
        event["data"],
        json!({ "id": id, "message_id": file["message_id"], "channel_id": channel, "reason": "user" })
    );

    for path in [
        format!("/api/files/{id}"),
        format!("/api/files/download/{id}"),
    ] {
        expect_error(
            app.get(&path, &alice.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect_error(
        app.delete(&format!("/api/files/{id}"), &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        fetch(&url).await.status(),
        StatusCode::NOT_FOUND,
        "an issued link stops working"
    );
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"][0]["files"], json!([]));
    let row = &rows(&app).await[0];
    assert!(row.is_deleted && row.deleted_at.is_some());
}

async fn leaving_the_channel_stops_issued_links(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    let file = upload_one(&app, &alice, channel).await;
    let link = expect_json(
        app.get(&format!("/api/files/download/{}", file["id"]), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&url).await.status(), StatusCode::OK);
    assert_eq!(
        app.delete(&format!("/api/channels/{channel}/members/me"), &bob.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(fetch(&url).await.status(), StatusCode::NOT_FOUND);
    // Alice's own link is unaffected.
    assert_eq!(
        fetch(file["url"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}

async fn tampered_and_expired_links_are_refused(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let first = upload_one(&app, &alice, channel).await;
    let second = upload_one(&app, &alice, channel).await;
    let url = first["url"].as_str().unwrap().to_owned();
    let (base, token) = url.split_once("token=").unwrap();
    let tampered = [
        format!(
            "{base}token={}",
            token.replacen(
                &format!("{}.", first["id"]),
                &format!("{}.", second["id"]),
                1
            )
        ),
        url.replace(
            &format!("/files/{}/", first["id"]),
            &format!("/files/{}/", second["id"]),
        ),
        format!("{url}A"),
        format!("{base}token="),
        base.trim_end_matches(['?', '&']).to_owned(),
    ];
    // The API has one answer for every kind of bad link.
    for bad in &tampered {
        expect_error(fetch(bad).await, StatusCode::FORBIDDEN, "invalid_link").await;
    }
    // Expired: a link signed with the server's key that ran out ten seconds ago (issued
    // with a negative lifetime, instead of waiting for a real one to run out).
    let expired = chatserver::links::DownloadLinks::new(&app.state.settings.auth.jwt_secret, -10);
    let first_id = first["id"].as_i64().unwrap() as i32;
    let (stale, _) = expired.issue(&app.address, first_id, alice.id as i32);
    expect_error(fetch(&stale).await, StatusCode::FORBIDDEN, "invalid_link").await;
    // The same link with a live expiry works: only the expiry made the difference.
    let live = chatserver::links::DownloadLinks::new(&app.state.settings.auth.jwt_secret, 60);
    let (fresh, _) = live.issue(&app.address, first_id, alice.id as i32);
    assert_eq!(fetch(&fresh).await.status(), StatusCode::OK);
}

async fn attaching_to_an_existing_message(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, bob, channel) = app.two_members().await;
    let mallory = app.register("mallory").await;
    let message = app.post_message(&alice, channel, "files follow").await;
    let attach = |user: &TestUser, message_id: String, files: Vec<Upload>| {
        app.attach_files(user, &message_id, &files).send()
    };

    let id = message["id"].to_string();
    let mut events = app.events().await;
    let pdf = || vec![Upload::new("a.pdf", "application/pdf", fixtures::pdf(500))];
    let created = expect_json(
        attach(&alice, id.clone(), pdf()).await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["files"][0]["message_id"], message["id"]);
    let event = app.render(
        &recv_within(&mut events, "file_upload_complete").await,
        &bob,
    );
    assert_eq!(event["type"], "file_upload_complete");
    assert_eq!(event["data"]["id"], created["files"][0]["id"]);

    expect_error(
        attach(&bob, id.clone(), pdf()).await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        attach(&mallory, id.clone(), pdf()).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        attach(&alice, "999999".into(), pdf()).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        attach(&alice, "abc".into(), pdf()).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        attach(&alice, id.clone(), vec![]).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_eq!(rows(&app).await.len(), 1);
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"][0]["files"].as_array().unwrap().len(), 1);
}

async fn download_links_are_counted_and_rate_limited(store: StoreKind) {
    let app = spawn_app_on(store, &[("DOWNLOAD_LINKS_PER_MINUTE", "3")]).await;
    let (alice, bob, channel) = app.two_members().await;
    let file = upload_one(&app, &alice, channel).await;
    let path = format!("/api/files/download/{}", file["id"]);
    for _ in 0..3 {
        let link = expect_json(app.get(&path, &bob.token).await, StatusCode::OK).await;
        assert_eq!(link["file"]["id"], file["id"]);
        assert!(link["expires_at"].as_str().unwrap().ends_with('Z'));
    }
    let limited = app.get(&path, &bob.token).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Per user: alice is not limited by bob's requests.
    assert_eq!(app.get(&path, &alice.token).await.status(), StatusCode::OK);
    let row = &rows(&app).await[0];
    assert_eq!(row.download_count, 4);
    assert!(row.last_downloaded_at.is_some());
}

/// An instance killed mid-upload leaves an S3 multipart upload (or, on the local store, a
/// temporary file). Once older than `ORPHAN_MIN_AGE_SECONDS` the sweeper ends it; younger
/// ones (a live upload on another instance) and other deployments' are left alone.
async fn the_sweeper_aborts_uploads_a_killed_instance_left(store: StoreKind) {
    let app = app_on(store).await;
    let sweeper = |orphan_min_age_seconds: i64| {
        let mut settings = (*app.state.settings).clone();
        settings.store.orphan_min_age_seconds = orphan_min_age_seconds;
        chatserver::gc::Sweeper {
            db: app.state.db.clone(),
            store: app.state.store.clone(),
            settings: std::sync::Arc::new(settings),
        }
    };
    let ours = format!(
        "{}channels/1/2026/12/04/00000000-0000-0000-0000-000000000001.bin",
        app.state.store.owned_prefix()
    );
    let theirs = "another-deployment/channels/1/2026/12/04/x.bin".to_owned();

    let pending = async || match &app.s3 {
        Some(s3) => s3.pending_multipart_uploads().await,
        None => std::fs::read_dir(app.data_dir().join("files/tmp"))
            .unwrap()
            .count(),
    };
    match &app.s3 {
        Some(s3) => {
            let bucket = &app.state.settings.store.s3.as_ref().unwrap().bucket;
            for key in [&ours, &theirs] {
                let started = s3
                    .client()
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
                s3.client()
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(started.upload_id().unwrap())
                    .part_number(1)
                    .body(vec![7u8; 64 * 1024].into())
                    .send()
                    .await
                    .unwrap();
            }
        }
        None => {
            // The local store's temporary files are shared by deployments using one data
            // directory, and a live upload's is written continuously: age decides alone.
            let tmp = app.data_dir().join("files/tmp");
            let stale = std::fs::File::create(tmp.join("killed-upload")).unwrap();
            std::fs::write(tmp.join("killed-upload"), vec![7u8; 64 * 1024]).unwrap();
            let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
            stale.set_modified(two_days_ago).unwrap();
            std::fs::write(tmp.join("live-upload"), b"still being written").unwrap();
        }
    }
    assert_eq!(pending().await, 2);

    // Younger than the default day: left alone.
    let report = chatserver::gc::sweep(&sweeper(86_400)).await.unwrap();
    assert_eq!(report.stale_uploads_aborted, app.s3.is_none() as usize);
    let after_default = pending().await;

    let report = chatserver::gc::sweep(&sweeper(0)).await.unwrap();
    match &app.s3 {
        Some(s3) => {
            assert_eq!(after_default, 2, "a young upload is not aborted");
            assert_eq!(report.stale_uploads_aborted, 1);
            // Only the other deployment's upload is left.
            assert_eq!(s3.pending_multipart_uploads().await, 1);
            let bucket = &app.state.settings.store.s3.as_ref().unwrap().bucket;
            let left = s3
                .client()
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            let keys: Vec<&str> = left.uploads().iter().filter_map(|u| u.key()).collect();
            assert_eq!(keys, [theirs.as_str()]);
        }
        None => {
            assert_eq!(after_default, 1, "the stale file went, the live one stayed");
            assert_eq!(report.stale_uploads_aborted, 1, "age 0: the live one too");
            assert_eq!(pending().await, 0);
        }
    }
}

/// With `AWS_S3_SSE`, every object the server writes asks S3 to encrypt it: one-part
/// puts and multipart uploads alike.
#[tokio::test]
async fn s3_objects_are_written_with_the_configured_server_side_encryption() {
    let app = spawn_app_on(StoreKind::S3, &[("AWS_S3_SSE", "AES256")]).await;
    let (alice, _, channel) = app.two_members().await;
    let small = fixtures::png(2_000);
    let large = fixtures::png(12 * 1024 * 1024); // over one part: a multipart upload
    for (name, bytes) in [("small.png", small), ("large.png", large)] {
        let response = app
            .post_files(
                &alice,
                channel,
                name,
                &[Upload::new(name, "image/png", bytes)],
            )
            .await;
        expect_json(response, StatusCode::CREATED).await;
    }
    let writes = app.s3.as_ref().unwrap().encryption_of_writes().await;
    let keys: Vec<String> = rows(&app).await.into_iter().map(|r| r.s3_key).collect();
    assert_eq!(keys.len(), 2);
    for key in &keys {
        let seen: Vec<_> = writes.iter().filter(|(k, _)| k == key).collect();
        assert!(!seen.is_empty(), "{key} was not written");
        for (_, encryption) in seen {
            assert_eq!(encryption.as_deref(), Some("AES256"), "{key}");
        }
    }
}

/// A sweeper of `app`'s deployment for which everything the test has made so far is old
/// enough to purge or remove: its cutoffs lie 5 s in the future. Timestamps are kept to
/// the second, so with cutoffs of "now" the tests used to sleep past a second boundary.
fn eager_sweeper(app: &TestApp) -> chatserver::gc::Sweeper {
    let mut settings = (*app.state.settings).clone();
    settings.store.file_purge_after_seconds = -5;
    settings.store.orphan_min_age_seconds = -5;
    chatserver::gc::Sweeper {
        db: app.state.db.clone(),
        store: app.state.store.clone(),
        settings: std::sync::Arc::new(settings),
    }
}

async fn the_sweeper_purges_deleted_and_orphaned_objects(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let kept = upload_one(&app, &alice, channel).await;
    let deleted = upload_one(&app, &alice, channel).await;
    assert_eq!(
        app.delete(&format!("/api/files/{}", deleted["id"]), &alice.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // An object left by a crash between storing and committing; and objects this
    // deployment never wrote: another deployment's sharing the store, and one from before
    // deployments had prefixes.
    let name = "channels/1/2020/01/01/00000000-0000-0000-0000-000000000000.png";
    let orphan = format!("{}{name}", app.state.store.owned_prefix());
    let foreign = [format!("another-deployment/{name}"), name.to_owned()];
    for key in std::iter::once(&orphan).chain(&foreign) {
        let mut body = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"orphan"))]);
        app.state
            .store
            .put_stream(
                key,
                &chatserver::storage::Presentation::of("orphan.png", "image/png"),
                &mut body,
            )
            .await
            .unwrap();
    }
    assert_eq!(app.object_keys().await.len(), 5);
    let sweeper = eager_sweeper(&app);

    let report = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!(report.purged, 1);
    assert_eq!(report.orphans_removed, 1);
    assert!(report.missing_objects.is_empty());
    let kept_row = rows(&app)
        .await
        .into_iter()
        .find(|r| r.id as i64 == kept["id"].as_i64().unwrap())
        .unwrap();
    let mut left = vec![kept_row.s3_key.clone()];
    left.extend(foreign.iter().cloned());
    left.sort();
    assert_eq!(
        app.object_keys().await,
        left,
        "only this deployment's objects are swept"
    );
    assert_eq!(
        fetch(kept["url"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );

    // A second sweep (another instance, say) finds nothing to do.
    let again = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!((again.purged, again.orphans_removed), (0, 0));
    // A row whose object vanished is reported, and its link answers 404, not 500.
    app.state.store.delete(&kept_row.s3_key).await.unwrap();
    let report = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!(report.missing_objects, vec![kept_row.id]);
    assert_eq!(
        fetch(kept["url"].as_str().unwrap()).await.status(),
        StatusCode::NOT_FOUND
    );
}

/// `Range` on a download link: `206` with the asked bytes and `Content-Range`, from the
/// server itself (local store) or from S3 after the redirect.
async fn downloads_serve_byte_ranges(store: StoreKind) {
    let app = app_on(store).await;
    let (alice, _, channel) = app.two_members().await;
    let bytes = fixtures::pdf(5000);
    let message = expect_json(
        app.post_files(
            &alice,
            channel,
            "doc",
            &[Upload::new("d.pdf", "application/pdf", bytes.clone())],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let url = message["files"][0]["url"].as_str().unwrap();
    let partial = open_link(&app, url, Some("bytes=100-199")).await;
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        partial.headers()["content-range"],
        format!("bytes 100-199/{}", bytes.len()).as_str()
    );
    assert_eq!(partial.bytes().await.unwrap(), bytes[100..200]);
    let tail = open_link(&app, url, Some("bytes=-10")).await;
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.unwrap(), bytes[bytes.len() - 10..]);
}

async fn storage_status_is_for_admins(store: StoreKind) {
    let app = spawn_app_on(store, &[]).await;
    let (alice, bob, channel) = app.two_members().await;
    app.grant_admin("alice").await;
    let file = upload_one(&app, &alice, channel).await;
    let status = expect_json(
        app.get("/api/admin/storage-status", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        status["store"],
        if store == StoreKind::S3 {
            "s3"
        } else {
            "local"
        }
    );
    assert_eq!(status["live_check_passed"], true);
    assert_eq!(status["object_count"], 1);
    assert_eq!(status["total_bytes"], file["file_size"]);
    if let Some(s3) = &app.s3 {
        assert_eq!(status["bucket"], s3.bucket.as_str());
    }
    expect_error(
        app.get("/api/admin/storage-status", &bob.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

/// S3 only: the store goes away in the middle of an upload.
#[tokio::test]
async fn s3_store_stopping_mid_upload_is_503_and_leaves_nothing() {
    // In process even when TEST_S3_ENDPOINT names another server: it is stopped here.
    let mut app = app_on(StoreKind::S3InProcess).await;
    let (alice, _, channel) = app.two_members().await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let boundary = "stopstop";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nx\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n\r\n"
    );
    let request = app
        .client
        .post(app.url(&format!("/api/channels/{channel}/messages")))
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(tokio_stream_from(receiver)))
        .send();
    let response = tokio::spawn(request);
    // 9 MiB: past the first 8 MiB part, so a multipart upload is open.
    sender.send(Ok(head.into_bytes())).await.unwrap();
    sender.send(Ok(fixtures::mp4(1024))).await.unwrap();
    for i in 0..(9 * 16) {
        sender
            .send(Ok(fixtures::filler(64 * 1024, i)))
            .await
            .unwrap();
    }
    // The precondition the test is named for, not a pause: the upload is under way in S3.
    assert!(
        eventually(async || pending_uploads(&app).await == 1).await,
        "no multipart upload was ever open"
    );
    app.s3.as_ref().unwrap().stop();
    // More of the file, then the body stays open: the server must give up and answer while
    // the client is still sending (and, holding the body open, the client sees the answer
    // rather than a failed write).
    let feeder = tokio::spawn(async move {
        for i in 0..(16 * 16) {
            if sender
                .send(Ok(fixtures::filler(64 * 1024, i)))
                .await
                .is_err()
            {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    let answered = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("no answer while the body was open")
        .unwrap()
        .expect("the answer, not a transport error");
    expect_error(
        answered,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    feeder.abort();
    assert!(rows(&app).await.is_empty());
    // Back up: no object was completed. (The abort could not reach a stopped server; the
    // sweeper and the bucket's lifecycle rules handle such leftovers.)
    app.s3.as_mut().unwrap().restart().await;
    assert!(app.object_keys().await.is_empty());
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"], json!([]));
}

fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn the_store_being_down_is_503_storage_unavailable() {
    let app = app_on(StoreKind::S3InProcess).await;
    let (alice, _, channel) = app.two_members().await;
    app.s3.as_ref().unwrap().stop();
    let response = app
        .post_files(
            &alice,
            channel,
            "x",
            &[Upload::new("a.png", "image/png", fixtures::png(100))],
        )
        .await;
    expect_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    assert!(rows(&app).await.is_empty());
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = expect_json(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["store"]["ok"], false);
}

/// Found by a newcomer: an SQLite run and a PostgreSQL run with default settings shared
/// `data/files`, and `gc` on one deleted the other's file. Each deployment's objects now
/// live under a prefix recorded in its own database.
#[tokio::test]
async fn deployments_sharing_a_store_keep_their_files_apart() {
    let first = spawn_app_with(&[]).await;
    let shared_dir = first.data_dir().display().to_string();
    let second = spawn_app_with(&[("DATA_DIR", shared_dir.as_str())]).await;
    let (first_prefix, second_prefix) = (
        first.state.store.owned_prefix(),
        second.state.store.owned_prefix(),
    );
    assert_ne!(first_prefix, second_prefix);
    // Instances of one deployment agree on its prefix.
    let peer = first.spawn_peer(&[]).await;
    assert_eq!(peer.state.store.owned_prefix(), first_prefix);

    let mut files = Vec::new();
    for app in [&first, &second] {
        let (alice, _, channel) = app.two_members().await;
        files.push(upload_one(app, &alice, channel).await);
    }
    assert_eq!(
        first.object_keys().await.len(),
        2,
        "one store holds both deployments' files"
    );
    for app in [&first, &second] {
        let report = chatserver::gc::sweep(&eager_sweeper(app)).await.unwrap();
        assert_eq!(report.orphans_removed, 0, "swept another deployment's file");
    }
    for file in &files {
        let response = fetch(file["url"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Found by attack: an S3 server that accepts connections and never answers held an upload
/// for 40 s, which then committed after the client had given up.
#[tokio::test]
async fn a_store_that_never_answers_fails_uploads_with_503_in_time() {
    use tokio::io::AsyncReadExt;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = silent.accept().await.unwrap();
            // Reads everything, answers nothing.
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let app = spawn_app_with(&[
        ("AWS_S3_BUCKET_NAME", "chat"),
        ("AWS_S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_S3_READ_TIMEOUT_SECONDS", "1"),
        ("AWS_S3_OPERATION_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let (alice, _, channel) = app.two_members().await;
    let started = std::time::Instant::now();
    let files = [Upload::new("pic.png", "image/png", fixtures::png(2000))];
    let response = app.post_files(&alice, channel, "pic", &files).await;
    expect_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    assert!(rows(&app).await.is_empty(), "nothing committed");
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"], json!([]), "no message without its file");
}

/// Links are built from `Host`; a proxy's `Forwarded` / `X-Forwarded-*` headers count only
/// when the TCP peer is one of `TRUSTED_PROXIES` (from anyone else they would let a client
/// have links to another host issued in its name).
#[tokio::test]
async fn links_follow_forwarding_headers_only_from_trusted_proxies() {
    let forwarding: [&[(&str, &str)]; 2] = [
        &[("forwarded", "for=203.0.113.9;proto=https;host=chat.example")],
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example"),
        ],
    ];
    for (trusted, expected) in [
        (None, None),
        (Some("127.0.0.1"), Some("https://chat.example")),
    ] {
        let settings: Vec<(&str, &str)> = trusted
            .map(|t| vec![("TRUSTED_PROXIES", t)])
            .unwrap_or_default();
        let app = spawn_app_with(&settings).await;
        let (alice, _, channel) = app.two_members().await;
        let file = upload_one(&app, &alice, channel).await;
        let id = file["id"].as_i64().unwrap();
        let expected = expected.map(str::to_owned).unwrap_or(app.address.clone());
        for headers in forwarding {
            let mut request = app
                .client
                .get(app.url(&format!("/api/files/download/{id}")))
                .bearer_auth(&alice.token);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let link = expect_json(request.send().await.unwrap(), StatusCode::OK).await;
            let url = link["url"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("{expected}/api/files/{id}/content?token=")),
                "trusted proxies {trusted:?}, {headers:?}: {url}"
            );
        }
        // Host alone is always the caller's.
        let link = expect_json(
            app.client
                .get(app.url(&format!("/api/files/download/{id}")))
                .bearer_auth(&alice.token)
                .header("host", "other.example:8080")
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert!(
            link["url"]
                .as_str()
                .unwrap()
                .starts_with("http://other.example:8080/api/files/"),
            "{link}"
        );
    }
}
