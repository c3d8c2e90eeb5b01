//! Preview benchmark: thumbnails of camera-size JPEGs (12 Mpx) and of PNGs, made the way the
//! preview worker makes them (`chatserver::media::previews::make`, one image at a time, as
//! with `MEDIA_WORKERS=1`), against `vipsthumbnail` (Debian `libvips-tools`) making the same
//! sizes (400 px on the long side) over the same files in one invocation per set, so its
//! start-up is paid once. Prints images per CPU-second of both, their ratio, and peak RSS
//! growth; then how much metadata stripping adds to server-path upload time.
//!
//! Targets (issue 16): a throughput ratio of at least 1.0, peak RSS growth of at most 128 MiB,
//! stripping adding at most 5 % to upload time.
//!
//! ```sh
//! scripts/bench-thumbs.sh                      # 50 JPEGs + 50 PNGs, 3 upload rounds
//! scripts/bench-thumbs.sh --jpegs 10 --pngs 10 --rounds 1
//! ```
//!
//! Our side runs in a child process of this example (`--measure-ours DIR`), so its peak RSS
//! is its own and not the image generator's. vipsthumbnail's CPU time is read with bash's
//! `times` (its children's user and system time), its peak RSS by polling its VmHWM.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use image::{DynamicImage, ImageFormat, RgbImage};

use common::{
    Spawned, cpu_count, cpu_seconds, free_ports, load_average, median, mib, proc_status_bytes,
    server_bin_to_measure, wait_healthy, work_dir,
};

const TARGET_RATIO: f64 = 1.0;
const TARGET_RSS_MIB: f64 = 128.0;
const TARGET_STRIP_PERCENT: f64 = 5.0;
const SIDE: u32 = 400;

#[derive(Parser)]
#[command(about = "Thumbnails: chatserver's preview worker vs vipsthumbnail; stripping's cost")]
struct Args {
    /// Camera-size JPEGs (4000x3000, with EXIF and GPS).
    #[arg(long, default_value_t = 50)]
    jpegs: usize,
    /// PNGs (screenshot-like, --png-width x --png-height).
    #[arg(long, default_value_t = 50)]
    pngs: usize,
    #[arg(long, default_value_t = 2000)]
    png_width: u32,
    #[arg(long, default_value_t = 1500)]
    png_height: u32,
    /// Rounds of the upload comparison (strip on / off, alternating); medians are shown.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Skip the upload comparison (needs the chatserver binary).
    #[arg(long)]
    skip_upload: bool,
    #[arg(long)]
    server_bin: Option<PathBuf>,
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Internal: measure our previews of the images in this directory and print the figures.
    #[arg(long, hide = true)]
    measure_ours: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.measure_ours {
        return measure_ours_here(dir);
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: built without --release; the figures mean little");
    }
    let vips =
        which("vipsthumbnail").context("vipsthumbnail not found: apt-get install libvips-tools")?;
    let work = work_dir(args.tmp_dir.as_deref())?;
    let jpeg_dir = work.path().join("jpeg");
    let png_dir = work.path().join("png");
    eprintln!("generating {} JPEGs and {} PNGs ...", args.jpegs, args.pngs);
    generate(&jpeg_dir, args.jpegs, |i| camera_jpeg(i as u32))?;
    generate(&png_dir, args.pngs, |i| {
        screenshot_png(args.png_width, args.png_height, i as u32)
    })?;
    println!(
        "{} CPUs; load average before: {}; vips: {}",
        cpu_count(),
        load_average(),
        vips.display()
    );
    let mut rows = Vec::new();
    for (label, dir, count) in [
        ("JPEG 4000x3000", &jpeg_dir, args.jpegs),
        (
            &*format!("PNG {}x{}", args.png_width, args.png_height),
            &png_dir,
            args.pngs,
        ),
    ] {
        if count == 0 {
            continue;
        }
        let ours = measure_ours(dir)?;
        let theirs = measure_vips(&vips, dir, &work.path().join("vips-out"))?;
        rows.push((label.to_owned(), count, ours, theirs));
    }
    println!("load average after: {}\n", load_average());
    println!(
        "{:<18} {:>6} {:>12} {:>12} {:>8} {:>12} {:>12} {:>10} {:>10}",
        "set",
        "files",
        "ours img/cpu-s",
        "vips img/cpu-s",
        "ratio",
        "ours wall s",
        "vips wall s",
        "ours RSS+",
        "vips RSS"
    );
    for (label, count, ours, theirs) in &rows {
        let ours_rate = *count as f64 / ours.cpu_seconds;
        let vips_rate = *count as f64 / theirs.cpu_seconds;
        println!(
            "{label:<18} {count:>6} {ours_rate:>12.2} {vips_rate:>12.2} {:>7.2}x {:>12.2} {:>12.2} {:>8.1}MiB {:>8.1}MiB",
            ours_rate / vips_rate,
            ours.wall_seconds,
            theirs.wall_seconds,
            mib(ours.peak_rss_growth),
            mib(theirs.peak_rss),
        );
    }
    let total = |f: fn(&Measured) -> f64,
                 pick: fn(&(String, usize, Measured, Measured)) -> &Measured| {
        rows.iter().map(|r| f(pick(r))).sum::<f64>()
    };
    let files: usize = rows.iter().map(|r| r.1).sum();
    let ours_cpu = total(|m| m.cpu_seconds, |r| &r.2);
    let vips_cpu = total(|m| m.cpu_seconds, |r| &r.3);
    let ratio = (files as f64 / ours_cpu) / (files as f64 / vips_cpu);
    let rss = rows.iter().map(|r| r.2.peak_rss_growth).max().unwrap_or(0);
    println!(
        "all {files} files: ours {:.2} img/cpu-s, vips {:.2} img/cpu-s: {ratio:.2}x (target >= {TARGET_RATIO:.1}x: {}); \
         our peak RSS growth {:.1} MiB (target <= {TARGET_RSS_MIB} MiB: {})",
        files as f64 / ours_cpu,
        files as f64 / vips_cpu,
        verdict(ratio >= TARGET_RATIO),
        mib(rss),
        verdict(mib(rss) <= TARGET_RSS_MIB),
    );

    if !args.skip_upload && args.jpegs > 0 {
        let server_bin = server_bin_to_measure(args.server_bin.as_deref())?;
        let runtime = tokio::runtime::Runtime::new()?;
        let (on, off) = runtime.block_on(upload_rounds(
            &server_bin,
            work.path(),
            &jpeg_dir,
            args.rounds,
        ))?;
        let overhead = (on / off - 1.0) * 100.0;
        println!(
            "\nserver-path uploads of the {} JPEGs (median of {} rounds): stripping on {on:.2} s, \
             off {off:.2} s: {overhead:+.1} % (target <= {TARGET_STRIP_PERCENT} %: {})",
            args.jpegs,
            args.rounds,
            verdict(overhead <= TARGET_STRIP_PERCENT)
        );
    }
    println!(
        "\nreproduce: scripts/bench-thumbs.sh --jpegs {} --pngs {} --rounds {}",
        args.jpegs, args.pngs, args.rounds
    );
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

// ---------------------------------------------------------------------------------------
// Images

fn generate(dir: &Path, count: usize, make: impl Fn(usize) -> Vec<u8>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..count {
        let ext = if dir.ends_with("jpeg") { "jpg" } else { "png" };
        std::fs::write(dir.join(format!("img{i:03}.{ext}")), make(i))?;
    }
    Ok(())
}

/// A 12 Mpx photo-like JPEG (smooth shapes and sensor-like noise, quality 90) with an EXIF
/// block carrying GPS-looking text and an XMP packet, as phones write them.
fn camera_jpeg(seed: u32) -> Vec<u8> {
    let (w, h) = (4000, 3000);
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let image = RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 9) as i32 - 4;
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let wave = ((fx * 6.0 + seed as f32).sin() * (fy * 4.0).cos() * 60.0) as i32;
        let c = |base: i32| (base + wave + noise).clamp(0, 255) as u8;
        image::Rgb([
            c(120 + (fx * 80.0) as i32),
            c(110),
            c(90 + (fy * 100.0) as i32),
        ])
    });
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&image)
        .expect("encoding a JPEG in memory");
    let plain = out.into_inner();
    let mut exif =
        b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
    exif.extend(std::iter::repeat_n(b'G', 12_000)); // a maker-note-sized block
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPS 48.85 2.29</x:xmpmeta>";
    let mut file = plain[..2].to_vec();
    for (marker, payload) in [(0xE1u8, exif.as_slice()), (0xE1, xmp.as_slice())] {
        file.extend([0xFF, marker]);
        file.extend(((payload.len() + 2) as u16).to_be_bytes());
        file.extend(payload);
    }
    file.extend(&plain[2..]);
    file
}

/// A screenshot-like PNG: flat areas, text-like stripes.
fn screenshot_png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(w, h, |x, y| {
        let band = (y / 24 + seed) % 7;
        let text = (x / 3 + y / 2 + seed) % 11 < 2 && band.is_multiple_of(2);
        if text {
            image::Rgb([30, 30, 40])
        } else {
            image::Rgb([240 - band as u8 * 10, 242, 248 - (x / 100 % 5) as u8 * 6])
        }
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image)
        .write_to(&mut out, ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

// ---------------------------------------------------------------------------------------
// Measurements

struct Measured {
    cpu_seconds: f64,
    wall_seconds: f64,
    /// Ours: growth over the measuring process's RSS before the first image.
    peak_rss_growth: u64,
    /// vips: its whole peak RSS.
    peak_rss: u64,
}

/// Runs this example again as `--measure-ours DIR` and reads its one line of figures.
fn measure_ours(dir: &Path) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe).arg("--measure-ours").arg(dir).output()?;
    ensure!(
        output.status.success(),
        "measuring our previews failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout)?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected figures {line:?}"))?;
    ensure!(fields.len() == 3, "unexpected figures {line:?}");
    Ok(Measured {
        cpu_seconds: fields[0],
        wall_seconds: fields[1],
        peak_rss_growth: fields[2] as u64,
        peak_rss: 0,
    })
}

/// In the child: every image of `dir`, one at a time, as a preview worker does it (read the
/// file, make the previews, write the thumbnail).
fn measure_ours_here(dir: &Path) -> anyhow::Result<()> {
    let out = dir.with_extension("ours-out");
    std::fs::create_dir_all(&out)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let pid = std::process::id();
    let before_rss = proc_status_bytes(pid, "VmRSS")?;
    let cpu_before = cpu_seconds("self")?;
    let started = Instant::now();
    for path in &files {
        let bytes = std::fs::read(path)?;
        let mime = if path.extension().is_some_and(|e| e == "jpg") {
            "image/jpeg"
        } else {
            "image/png"
        };
        let preview = chatserver::media::previews::make(&bytes, mime, 50_000_000)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        ensure!(preview.width.max(preview.height) > SIDE);
        let name = path.file_name().context("a file name")?;
        std::fs::write(
            out.join(name).with_extension(preview.thumbnail_extension),
            &preview.thumbnail,
        )?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self")? - cpu_before;
    let peak = proc_status_bytes(pid, "VmHWM")?;
    println!("{cpu} {wall} {}", peak.saturating_sub(before_rss));
    Ok(())
}

/// One `vipsthumbnail` over every file of `dir`, 400 px on the long side, JPEG at the
/// quality we write.
fn measure_vips(vips: &Path, dir: &Path, out: &Path) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(out)?;
    let mut files: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path().display().to_string()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let script = format!(
        "{} --size {SIDE}x{SIDE} -o '{}/%s.jpg[Q=80]' {} && times",
        vips.display(),
        out.display(),
        files
            .iter()
            .map(|f| format!("'{f}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let bash = child.id();
    let mut peak = 0u64;
    while child.try_wait()?.is_none() {
        // bash's one child is vipsthumbnail; VmHWM only grows, so the last reading is near
        // its peak.
        let children = std::fs::read_to_string(format!("/proc/{bash}/task/{bash}/children"))
            .unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
            if let Ok(hwm) = proc_status_bytes(pid, "VmHWM") {
                peak = peak.max(hwm);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed().as_secs_f64();
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "vipsthumbnail failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `times`: the shell's own user and system time, then its children's.
    let text = String::from_utf8(output.stdout)?;
    let children = text.lines().nth(1).context("no `times` output")?;
    let cpu: f64 = children
        .split_whitespace()
        .map(parse_times)
        .collect::<anyhow::Result<Vec<f64>>>()?
        .iter()
        .sum();
    Ok(Measured {
        cpu_seconds: cpu,
        wall_seconds: wall,
        peak_rss_growth: 0,
        peak_rss: peak,
    })
}

/// bash's `1m2.345s`.
fn parse_times(value: &str) -> anyhow::Result<f64> {
    let (minutes, seconds) = value
        .trim_end_matches('s')
        .split_once('m')
        .with_context(|| format!("unexpected time {value:?}"))?;
    Ok(minutes.parse::<f64>()? * 60.0 + seconds.parse::<f64>()?)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------------------
// Stripping's cost on the upload path

/// Median seconds to upload every JPEG of `dir`, one request each, with stripping on and
/// off: a fresh server per measurement (local store, SQLite, no preview workers).
async fn upload_rounds(
    server_bin: &Path,
    work: &Path,
    dir: &Path,
    rounds: u32,
) -> anyhow::Result<(f64, f64)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let bodies: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("uploads: round {} of {rounds} ...", round + 1);
        for strip in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let seconds = upload_all(server_bin, work, &bodies, strip, round).await?;
            if strip {
                on.push(seconds)
            } else {
                off.push(seconds)
            }
        }
    }
    Ok((median(on), median(off)))
}

async fn upload_all(
    server_bin: &Path,
    work: &Path,
    bodies: &[Vec<u8>],
    strip: bool,
    round: u32,
) -> anyhow::Result<f64> {
    let dir = work.join(format!("server-{round}-{strip}"));
    std::fs::create_dir_all(&dir)?;
    let port = free_ports(1)?[0];
    let mut command = Command::new(server_bin);
    command
        .arg("serve")
        .current_dir(&dir)
        .env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/chat.db", dir.display()),
        )
        .env("DATA_DIR", &dir)
        .env("JWT_SECRET", "bench-secret-bench-secret-bench-secret-0")
        .env("MEDIA_WORKERS", "0")
        .env("GC_INTERVAL_SECONDS", "0")
        .env("STRIP_IMAGE_METADATA", strip.to_string())
        .env("RUST_LOG", "warn");
    let mut server = Spawned::start("chatserver", command, &dir.join("server.log"), false)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut server, Duration::from_secs(30)).await?;
    let answer: serde_json::Value = client
        .post(format!("{base}/api/auth/register"))
        .json(&serde_json::json!({"username": "bench", "password": "bench password 123"}))
        .send()
        .await?
        .json()
        .await?;
    let token = answer["token"].as_str().context("no token")?.to_owned();
    let channel: serde_json::Value = client
        .post(format!("{base}/api/channels"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "photos"}))
        .send()
        .await?
        .json()
        .await?;
    let channel = channel["id"].as_i64().context("no channel id")?;
    let started = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(body.clone())
            .file_name(format!("photo{i}.jpg"))
            .mime_str("image/jpeg")?;
        let form = reqwest::multipart::Form::new()
            .text("content", "photo")
            .part("file", part);
        let response = client
            .post(format!("{base}/api/channels/{channel}/messages"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("upload {i}: {}", response.text().await?);
        }
    }
    Ok(started.elapsed().as_secs_f64())
}
