//! The report as a reader sees it: the example sweep's `report/index.html` rendered by headless
//! Chromium. Every image must decode (naturalWidth > 0), every local link must resolve, the page
//! must log nothing to the console, and a screenshot is kept under the test's output folder
//! (`target/tmp/report_browser/`) for a person to look at.
//!
//! Needs `chromium-headless-shell` (Debian's package of that name; `.ci/test` installs it) or a
//! Chromium named by `SVCCA_CHROMIUM`. Without one the test fails and says so: a page nobody
//! rendered is not a tested page.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SVCCA_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium-headless-shell", "chromium", "chromium-browser"] {
        if let Some(dir) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!(
        "no headless Chromium found: install Debian's chromium-headless-shell \
         (apt-get install chromium-headless-shell) or set SVCCA_CHROMIUM to a Chromium binary"
    );
}

/// A page that loads the report in a frame and writes what it found into its own DOM, which
/// `--dump-dom` then prints. File pages may read each other only with
/// `--allow-file-access-from-files`, which the run passes.
fn probe_page(report: &Path) -> String {
    let url = format!("file://{}", report.display());
    format!(
        r#"<!doctype html><html><body>
<iframe id="report" src="{url}" style="width:1280px;height:900px"></iframe>
<pre id="result">pending</pre>
<script>
document.getElementById('report').addEventListener('load', async () => {{
  const d = document.getElementById('report').contentDocument;
  const imgs = Array.from(d.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const local = Array.from(d.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))
    .filter(h => !/^[a-z]+:/i.test(h) && !h.startsWith('#'));
  const dead = [];
  for (const h of local) {{
    try {{ const r = await fetch(new URL(h, d.baseURI)); if (!r.ok && r.status !== 0) dead.push(h); await r.text(); }}
    catch (e) {{ dead.push(h); }}
  }}
  document.getElementById('result').textContent = JSON.stringify({{
    title: d.title, images: imgs.length, broken: broken, links: local.length, dead: dead,
    headings: d.querySelectorAll('h1, h2').length
  }});
}});
</script></body></html>"#
    )
}

#[derive(serde::Deserialize, Debug)]
struct ProbeResult {
    title: String,
    images: usize,
    broken: Vec<String>,
    links: usize,
    dead: Vec<String>,
    headings: usize,
}

#[test]
fn example_report_renders_in_a_browser_with_every_image_and_link() {
    let browser = chromium();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_browser");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("out");

    let sweep = Command::new(env!("CARGO_BIN_EXE_svcca"))
        .current_dir(repo_root())
        .args(["sweep", "examples/digits-mlp.toml", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        sweep.status.success(),
        "example sweep failed: {}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    let index = out.join("report/index.html").canonicalize().unwrap();

    let probe = work.join("probe.html");
    std::fs::write(&probe, probe_page(&index)).unwrap();
    let run = Command::new(&browser)
        .args([
            "--no-sandbox",
            "--disable-gpu",
            "--allow-file-access-from-files",
            "--enable-logging=stderr",
            "--v=1",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", probe.display()))
        .output()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", browser.display()));
    assert!(
        run.status.success(),
        "{} failed: {}",
        browser.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let dom = String::from_utf8_lossy(&run.stdout);
    let json = dom
        .split("<pre id=\"result\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("the probe page wrote no result; DOM:\n{dom}"));
    let json = json
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    let result: ProbeResult = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("probe result {json:?} is not what the page writes: {e}"));

    assert!(
        !result.title.is_empty(),
        "the report has no title: {result:?}"
    );
    assert!(
        result.headings >= 3,
        "the report has fewer than 3 sections: {result:?}"
    );
    // The example draws dynamics, seeds, layer matrices, spectra, dimensionality and classes.
    assert!(
        result.images >= 10,
        "only {} images on the page: {result:?}",
        result.images
    );
    assert!(
        result.broken.is_empty(),
        "images that did not load: {:?}",
        result.broken
    );
    assert!(
        result.links > 0,
        "no local links (to the SVG figures): {result:?}"
    );
    assert!(
        result.dead.is_empty(),
        "links that do not resolve: {:?}",
        result.dead
    );

    // The report has no scripts: any console line (an error, a blocked resource) is a defect.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") && l.contains("report/"))
        .collect();
    assert!(
        console.is_empty(),
        "the report logged to the console:\n{}",
        console.join("\n")
    );

    let shot = work.join("report-screenshot.png");
    let run = Command::new(&browser)
        .args([
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,2400",
            "--hide-scrollbars",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", index.display()))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "screenshot failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot {} is not a rendered page",
        shot.display()
    );
    eprintln!("report screenshot: {}", shot.display());
}
