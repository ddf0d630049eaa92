//! Render an HTML file in Debian's headless Chromium: a screenshot that must
//! not be blank, and no console messages (errors, failed loads). Shared by
//! the tests of every crate that writes an HTML report (`#[path]` include;
//! the including crate has the `png` dev-dependency).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// Screenshot `html` and check it; panics naming what is wrong.
pub fn render_and_check(html: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1600",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("chromium not found ({e}): apt-get install -y chromium"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    // page console messages are logged as `...:CONSOLE(line)] "message"`
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages rendering {}:\n{}",
        html.display(),
        console.join("\n")
    );

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let first = pixels[0];
    let differing = pixels.iter().filter(|p| *p != &first).count();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        differing * 100 > pixels.len() && colours.len() > 8,
        "the screenshot of {} is blank: {differing} of {} pixels differ from the first, {} colours",
        html.display(),
        pixels.len(),
        colours.len()
    );
}
