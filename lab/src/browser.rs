//! A headless Chromium for the web view's tests, driven over WebDriver:
//! Debian's `chromedriver` (package chromium-driver) runs inside a network
//! namespace, so the browser it starts sees that namespace's LAN, and the
//! [`fantoccini`] client runs on a thread that entered the same namespace
//! (the sockets a thread makes belong to its namespace).
//!
//! [`in_netns`] runs a closure on such a thread with a current-thread tokio
//! runtime; [`Driver`] is the chromedriver process, its process group (the
//! browsers included) killed on drop; [`Driver::session`] opens a window of
//! a given size, as a phone when asked. The steps every browser test and
//! benchmark takes are here too: [`js`], [`until`], [`centre`], [`drag`],
//! and where screenshots go ([`screenshot_dir`]).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::Value;

use crate::error::io_err;
use crate::gate::Need;
use crate::netns::netns_command;
use crate::LabError;

/// What a browser test needs on the host.
pub const NEEDS: [Need<'static>; 3] = [
    Need::Root,
    Need::Tool("chromium", "chromium"),
    Need::Tool("chromedriver", "chromium-driver"),
];

/// Runs `f` on a new thread inside the network namespace `ns`, with a
/// current-thread tokio runtime for the browser's client; returns what
/// `f` returns.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> Result<T, LabError> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(io_err(format!("opening {path}")))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            LabError::Io {
                what: format!("entering {path}"),
                source: e.into(),
            }
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("starting a tokio runtime"))?;
        Ok(f(&rt))
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A chromedriver listening on `127.0.0.1:port` in a namespace.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
    sessions: std::sync::atomic::AtomicUsize,
}

impl Driver {
    /// Starts chromedriver in `ns` on `port`, logging to `log`; call it
    /// from [`in_netns`] for the same namespace (it waits for the port
    /// from there).
    pub fn start(ns: &str, port: u16, log: &Path) -> Result<Self, LabError> {
        let out =
            std::fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("duplicating a log file"))?;
        let child = netns_command(ns, "chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io_err("starting chromedriver (package chromium-driver)"))?;
        let profile = tempfile::tempdir().map_err(io_err("a browser profile directory"))?;
        let driver = Driver {
            child,
            port,
            profile,
            sessions: Default::default(),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(LabError::Browser {
                    what: format!("chromedriver on port {port}"),
                    cause: format!("not listening after 20 s (log: {})", log.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(driver)
    }

    /// A new browser window of `width`×`height` CSS pixels; with `phone`,
    /// a touch screen of that size at one device pixel per CSS pixel.
    pub async fn session(&self, width: u32, height: u32, phone: bool) -> Result<Client, LabError> {
        let mut chrome = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                format!("--window-size={width},{height}"),
                // A fresh profile each: no cookie from an earlier session.
                format!(
                    "--user-data-dir={}/{}",
                    self.profile.path().display(),
                    self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
            ],
        });
        if phone {
            chrome["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true },
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("goog:chromeOptions".into(), chrome);
        let fail = |what: &str| {
            let what = what.to_string();
            move |e: fantoccini::error::CmdError| LabError::Browser {
                what,
                cause: e.to_string(),
            }
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .map_err(|e| LabError::Browser {
                what: "opening a browser session".into(),
                cause: e.to_string(),
            })?;
        if !phone {
            // --window-size counts the window's frame: grow it by that much
            // so the page itself gets width×height.
            let frame = client
                .execute(
                    "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
                    vec![],
                )
                .await
                .map_err(fail("measuring the window's frame"))?;
            let dw = frame[0].as_u64().unwrap_or(0) as u32;
            let dh = frame[1].as_u64().unwrap_or(0) as u32;
            client
                .set_window_size(width + dw, height + dh)
                .await
                .map_err(fail("sizing the window"))?;
        }
        Ok(client)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every browser it started.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `OM_SCREENSHOTS`, else `web-view-screenshots` in
/// `scratch` (a test's `CARGO_TARGET_TMPDIR`); made if missing.
pub fn screenshot_dir(scratch: &str) -> Result<std::path::PathBuf, LabError> {
    let dir = std::env::var_os("OM_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(scratch).join("web-view-screenshots"));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Runs `script` (a function body returning a value; a promise is awaited)
/// in the page.
pub async fn js(c: &Client, script: &str) -> Result<Value, LabError> {
    c.execute(script, vec![])
        .await
        .map_err(|e| LabError::Browser {
            what: format!("running {script}"),
            cause: e.to_string(),
        })
}

/// Waits until `script` returns true; after `limit`, an error naming
/// `what` with the start of the page's text. How long it took.
pub async fn until(
    c: &Client,
    what: &str,
    limit: Duration,
    script: &str,
) -> Result<Duration, LabError> {
    let t0 = Instant::now();
    loop {
        if js(c, script).await? == Value::Bool(true) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            let page = js(c, "return document.body.innerText.slice(0, 2000)").await?;
            return Err(LabError::Browser {
                what: what.to_string(),
                cause: format!("not within {limit:?}; the page says: {page}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The centre of the element `css`, in viewport pixels.
pub async fn centre(c: &Client, css: &str) -> Result<(f64, f64), LabError> {
    let v = js(
        c,
        &format!(
            "const r = document.querySelector({css:?}).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]"
        ),
    )
    .await?;
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err(LabError::Browser {
            what: format!("finding {css}"),
            cause: format!("its box is {v}"),
        }),
    }
}

/// Drags the element `what` onto the element `onto` with the mouse, in
/// two strokes of 400 ms as a hand would.
pub async fn drag(c: &Client, what: &str, onto: &str) -> Result<(), LabError> {
    use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
    let (x1, y1) = centre(c, what).await?;
    let (x2, y2) = centre(c, onto).await?;
    let stroke = Some(Duration::from_millis(400));
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x: x1,
            y: y1,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveTo {
            duration: stroke,
            x: (x1 + x2) / 2.0,
            y: (y1 + y2) / 2.0,
        })
        .then(PointerAction::MoveTo {
            duration: stroke,
            x: x2,
            y: y2,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    c.perform_actions(mouse)
        .await
        .map_err(|e| LabError::Browser {
            what: format!("dragging {what} onto {onto}"),
            cause: e.to_string(),
        })
}
