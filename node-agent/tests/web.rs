//! The web view (`omnode agent --web`) against eight agents in network
//! namespaces, through its HTTP API as the page uses it: `omctl web` links,
//! sessions (steer and read-only), every endpoint with each kind of bad
//! input, the event stream following a job and a death, knobs taking
//! effect, a refused move with its reason, and `/metrics` accepted by
//! Prometheus' own checker. Gated like the other namespace tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::{enter_netns, omctl_as, Cluster};
use crate::util;

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The one-line error of a refusal.
    fn error(&self) -> String {
        let e = self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !e.is_empty() && !e.contains('\n'),
            "error body: {}",
            self.body
        );
        e
    }
}

/// An HTTP client inside the namespace of the node serving the view.
struct Web {
    ns: String,
    addr: String,
}

impl Web {
    /// `METHOD PATH` with `headers` and `body`, from inside the namespace.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let (ns, addr) = (self.ns.clone(), self.addr.clone());
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        std::thread::spawn(move || {
            enter_netns(&ns);
            let mut s = TcpStream::connect(&addr).expect("connect to the web view");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            parse(&raw)
        })
        .join()
        .unwrap()
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let c = cookie.map(|c| format!("om_session={c}"));
        let h: Vec<(&str, &str)> = c.iter().map(|c| ("Cookie", c.as_str())).collect();
        self.call("GET", path, &h, "")
    }

    fn post(&self, path: &str, cookie: Option<&str>, body: &str) -> Answer {
        let c = cookie.map(|c| format!("om_session={c}"));
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(c) = &c {
            h.push(("Cookie", c.as_str()));
        }
        self.call("POST", path, &h, body)
    }

    /// Logs in with the token of an `omctl web` link; the session id.
    fn login(&self, url: &str) -> String {
        let token = url.split_once("#login=").expect("a login link").1;
        let a = self.post("/api/login", None, &format!(r#"{{"token":"{token}"}}"#));
        assert_eq!(a.status, 200, "login: {}", a.body);
        let cookie = a
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "cookie: {cookie}"
        );
        cookie
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("om_session="))
            .expect("om_session=")
            .to_string()
    }

    /// The event stream's events (name, data), as they come.
    fn events(&self, cookie: &str) -> mpsc::Receiver<(String, Value)> {
        let (ns, addr, cookie) = (self.ns.clone(), self.addr.clone(), cookie.to_string());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            enter_netns(&ns);
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nCookie: om_session={cookie}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .unwrap();
            let mut name = String::new();
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                // Chunked framing lines are not event lines; skip them.
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    let v: Value = serde_json::from_str(d).unwrap_or(Value::Null);
                    if tx.send((name.clone(), v)).is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// An HTTP/1.1 answer (plain or chunked body).
fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `omctl web [--read-only]` on node `i` as `uid`.
fn link(c: &Cluster, i: usize, read_only: bool, uid: u32) -> Result<String, String> {
    let args: &[&str] = if read_only { &["--read-only"] } else { &[] };
    let out = omctl_as(c, i, "web", args, uid);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Waits for `check` on the answers to `GET path`.
fn wait_get(
    web: &Web,
    path: &str,
    cookie: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    util::wait_for(what, Duration::from_secs(20), || {
        let a = web.get(path, Some(cookie));
        if a.status != 200 {
            return Err(format!("{}: {}", a.status, a.body));
        }
        let v = a.json();
        if check(&v) {
            Ok(v)
        } else {
            Err(format!(
                "not yet: {}",
                a.body.chars().take(300).collect::<String>()
            ))
        }
    })
}

#[test]
fn web_view_api_sessions_actions_stream_and_metrics_on_eight_agents() {
    if !util::netns_tests() {
        return;
    }
    let n = 8;
    let mut c = Cluster::new("web", 88, n);
    c.start(0, &["--web", "0.0.0.0:7947"]);
    c.start(1, &["--web", "0.0.0.0:7947", "--metrics-open"]);
    for i in 2..n {
        c.start(i, &[]);
    }
    let all: Vec<usize> = (0..n).collect();
    c.wait_view(0, &all, "everyone");
    let web = Web {
        ns: c.lan.nodes[0].clone(),
        addr: format!("{}:7947", c.lan.addr(0)),
    };

    // Links: root steers, anyone may look, and an agent without --web says so.
    let steer_url = link(&c, 0, false, 0).expect("omctl web as root");
    assert!(
        steer_url.starts_with(&format!("http://{}:7947/#login=omw1.", c.lan.addr(0))),
        "{steer_url}"
    );
    let read_url = link(&c, 0, true, 1000).expect("omctl web --read-only as a user");
    let refused = link(&c, 0, false, 1000).unwrap_err();
    assert!(refused.contains("takes root"), "{refused}");
    let none = link(&c, 2, false, 0).unwrap_err();
    assert!(none.contains("serves no web view"), "{none}");

    // The page and its files need no session; the API does.
    let page = web.get("/", None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>omcluster</title>"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|p| p.contains("default-src 'self'")));
    assert_eq!(web.get("/ui/app.js", None).status, 200);
    assert_eq!(web.get("/ui/uPlot.esm.js", None).status, 200);
    assert_eq!(web.get("/ui/nope.js", None).status, 404);
    let anon = web.get("/api/cluster", None);
    assert_eq!(anon.status, 401);
    assert!(anon.error().contains("omctl web"));
    assert_eq!(web.get("/metrics", None).status, 401);
    assert_eq!(web.get("/api/nowhere", None).status, 404);

    // Logging in: bad bodies, bad tokens, a token used twice, a form post.
    assert_eq!(web.post("/api/login", None, "{").status, 400);
    assert_eq!(web.post("/api/login", None, r#"{"tok":"x"}"#).status, 400);
    let malformed = web.post("/api/login", None, r#"{"token":"hello"}"#);
    assert_eq!(malformed.status, 401);
    assert!(malformed.error().contains("not a login token"));
    let forged = format!(r#"{{"token":"omw1.{}"}}"#, "ab".repeat(32));
    assert_eq!(web.post("/api/login", None, &forged).status, 401);
    let form = web.call(
        "POST",
        "/api/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "token=x",
    );
    assert_eq!(form.status, 415);
    let steer = web.login(&steer_url);
    let token = steer_url.split_once("#login=").unwrap().1;
    let again = web.post("/api/login", None, &format!(r#"{{"token":"{token}"}}"#));
    assert_eq!(again.status, 401, "a token works once");
    let read = web.login(&read_url);
    assert_eq!(
        web.get("/api/session", Some(&read)).json()["access"],
        "read"
    );
    assert_eq!(
        web.get("/api/session", Some(&steer)).json()["access"],
        "steer"
    );
    assert_eq!(web.get("/api/session", Some("0123")).status, 401);

    // The cluster: eight nodes, alive.
    let cluster = wait_get(
        &web,
        "/api/cluster",
        &steer,
        "eight live nodes in the view",
        |v| {
            v["status"]["nodes"]
                .as_array()
                .is_some_and(|ns| ns.len() == n && ns.iter().all(|n| n["state"] == "alive"))
        },
    );
    assert!(cluster["efficiency"].as_f64().is_some());
    let events = web.events(&read);
    let (first, _) = events
        .recv_timeout(Duration::from_secs(10))
        .expect("a first event");
    assert!(first == "status" || first == "jobs", "{first}");

    // A job started with omctl appears with its node, on the stream too.
    let mut job = c
        .omctl(0)
        .args(["run", "--node", "n3", "--", "sleep", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let seen = loop {
        let (name, data) = events
            .recv_timeout(Duration::from_secs(10))
            .expect("the stream goes on");
        if name == "jobs" {
            if let Some(j) = data["jobs"]
                .as_array()
                .and_then(|js| js.iter().find(|j| j["argv"][0] == "sleep"))
            {
                break j.clone();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the job never showed"
        );
    };
    assert_eq!(seen["node"], "n3");
    let id = seen["job"].as_str().unwrap().to_string();
    eprintln!(
        "job {id} on the stream {:.1} s after omctl run",
        t0.elapsed().as_secs_f64()
    );
    let on_n3 = web.get("/api/nodes/n3", Some(&read)).json();
    assert!(on_n3["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["job"] == id.as_str()));
    assert_eq!(
        web.get("/api/jobs?node=n3", Some(&read)).json()["jobs"][0]["job"],
        id.as_str()
    );
    assert_eq!(web.get("/api/jobs?node=zz", Some(&read)).status, 404);
    assert_eq!(web.get("/api/nodes/zz", Some(&read)).status, 404);

    // Actions: a read-only session may not; another site may not; bad
    // words, nodes and jobs are named.
    let ro = web.post("/api/nodes/n4/knob", Some(&read), r#"{"word":"block"}"#);
    assert_eq!(ro.status, 403);
    assert!(ro.error().contains("look but not act"));
    let cross = web.call(
        "POST",
        "/api/nodes/n4/knob",
        &[
            ("Content-Type", "application/json"),
            ("Cookie", &format!("om_session={steer}")),
            ("Origin", "http://evil.example"),
        ],
        r#"{"word":"block"}"#,
    );
    assert_eq!(cross.status, 403);
    let bad_word = web.post(
        "/api/nodes/n4/knob",
        Some(&steer),
        r#"{"word":"frobnicate"}"#,
    );
    assert_eq!(bad_word.status, 400);
    assert!(bad_word.error().contains("frobnicate"));
    assert_eq!(
        web.post("/api/nodes/zz/knob", Some(&steer), r#"{"word":"block"}"#)
            .status,
        404
    );
    assert_eq!(
        web.post("/api/nodes/n4/knob", Some(&steer), r#"{"word":1}"#)
            .status,
        400
    );
    assert_eq!(
        web.post("/api/jobs/nope-1/migrate", Some(&steer), r#"{"to":"n1"}"#)
            .status,
        404
    );
    let to_nowhere = web.post(
        &format!("/api/jobs/{id}/migrate"),
        Some(&steer),
        r#"{"to":"zz"}"#,
    );
    assert_eq!(to_nowhere.status, 404);
    assert!(to_nowhere.error().contains("no node zz"));

    // block from the page takes effect: omctl status shows it.
    let blocked = web.post("/api/nodes/n4/knob", Some(&steer), r#"{"word":"block"}"#);
    assert_eq!(blocked.status, 200, "{}", blocked.body);
    util::wait_for(
        "n4 blocked in omctl status",
        Duration::from_secs(10),
        || {
            let s = c.status(0)?;
            let n4 = s.nodes.iter().find(|n| n.name == "n4").ok_or("no n4")?;
            match &n4.load {
                Some(l) if l.knobs.block => Ok(()),
                _ => Err("not yet".to_string()),
            }
        },
    );

    // A move this host's kernel cannot make is refused with its reason
    // (409), the job stays, and the history marks it.
    let mv = web.post(
        &format!("/api/jobs/{id}/migrate"),
        Some(&steer),
        r#"{"to":"n5"}"#,
    );
    assert_eq!(mv.status, 409, "{}", mv.body);
    let why = mv.error();
    assert!(why.contains(&id), "{why}");
    let marks = web.get("/api/history/markers?since=0", Some(&read)).json();
    assert!(
        marks["markers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["kind"] == "move-failed" && m["job"] == id.as_str()),
        "{marks}"
    );
    assert_eq!(
        web.get("/api/nodes/n3", Some(&read)).json()["jobs"][0]["job"],
        id.as_str()
    );

    // History: a series for every node, bad parameters named, the CSV.
    let h = wait_get(
        &web,
        "/api/history?metric=jobs",
        &read,
        "history of every node",
        |v| {
            v["series"]["nodes"]
                .as_object()
                .is_some_and(|o| o.len() == n)
        },
    );
    assert_eq!(h["series"]["step_s"], 1);
    assert!(web
        .get("/api/history?metric=bogus", Some(&read))
        .error()
        .contains("bogus"));
    assert_eq!(
        web.get("/api/history?since=10&until=5", Some(&read)).status,
        400
    );
    assert_eq!(web.get("/api/history?since=x", Some(&read)).status, 400);
    assert_eq!(web.get("/api/history/jobs?at=abc", Some(&read)).status, 400);
    assert_eq!(web.get("/api/history/jobs", Some(&read)).status, 400);
    let now_ms = contracts::clock::unix_millis();
    let stays = web
        .get(&format!("/api/history/jobs?at={now_ms}"), Some(&read))
        .json();
    assert!(stays["stays"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["job"] == id.as_str() && s["node"] == "n3"));
    let csv = web.get("/api/history.csv", Some(&read));
    assert_eq!(csv.status, 200);
    assert!(csv
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/csv")));
    assert!(csv
        .body
        .starts_with("time_unix_s,node,load_cpus,memory_used_mib,jobs\n"));
    assert!(csv.body.lines().count() > n);

    // Machines at the boot server: these agents know none, and say so;
    // power off is only for a node omnode init booted.
    let m = web.get("/api/machines", Some(&read)).json();
    assert!(m["machines"].is_null(), "{m}");
    assert!(m["why"].as_str().unwrap().contains("no boot server"), "{m}");
    let admit = web.post("/api/machines/52:54:00:00:00:09/admit", Some(&steer), "{}");
    assert_eq!(admit.status, 409, "{}", admit.body);
    assert_eq!(
        web.post("/api/machines/52:54:00:00:00:09/frob", Some(&steer), "{}")
            .status,
        404
    );
    assert_eq!(
        web.post("/api/machines/52:54:00:00:00:09/admit", Some(&read), "{}")
            .status,
        403
    );
    let off = web.post("/api/nodes/n5/knob", Some(&steer), r#"{"word":"poweroff"}"#);
    assert_eq!(off.status, 409, "{}", off.body);
    assert!(
        off.error().contains("not booted by omnode init"),
        "{}",
        off.body
    );

    // The process list's figures and signals: the job's CPU, memory and
    // state are measured on n3; SIGSTOP holds it, SIGCONT (omctl kill)
    // lets it go; renice reaches every thread; bad orders are named.
    let job_now = |check: &dyn Fn(&Value) -> bool, what: &str| {
        wait_get(&web, "/api/jobs?node=n3", &read, what, |v| {
            v["jobs"][0]["job"] == id.as_str() && check(&v["jobs"][0])
        })["jobs"][0]
            .clone()
    };
    let j = job_now(&|j| j["usage"]["state"] == "sleeping", "the job measured");
    assert!(j["usage"]["rss_bytes"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["usage"]["nice"], 0, "{j}");
    let stop = web.post(
        &format!("/api/jobs/{id}/signal"),
        Some(&steer),
        r#"{"signal":"STOP"}"#,
    );
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert!(stop.json()["line"].as_str().unwrap().contains("stopped"));
    let j = job_now(
        &|j| j["usage"]["state"] == "stopped",
        "the job stopped in the view",
    );
    assert!(
        j["cantmove"].as_str().unwrap().contains("SIGSTOP"),
        "a stopped job says it stays: {j}"
    );
    let cont = omctl_as(&c, 0, "kill", &["-s", "CONT", &id], 0);
    assert!(cont.status.success(), "{cont:?}");
    assert!(String::from_utf8_lossy(&cont.stdout).contains("continued"));
    job_now(
        &|j| j["usage"]["state"] == "sleeping" && !j["cantmove"].to_string().contains("SIGSTOP"),
        "the job running again",
    );
    let nice = web.post(
        &format!("/api/jobs/{id}/renice"),
        Some(&steer),
        r#"{"nice":7}"#,
    );
    assert_eq!(nice.status, 200, "{}", nice.body);
    job_now(&|j| j["usage"]["nice"] == 7, "nice 7 in the view");
    let not_owner = omctl_as(&c, 0, "renice", &["1", &id], 1000);
    assert_eq!(not_owner.status.code(), Some(126), "{not_owner:?}");
    assert!(String::from_utf8_lossy(&not_owner.stderr).contains("only its owner or root"));
    let bad_sig = web.post(
        &format!("/api/jobs/{id}/signal"),
        Some(&steer),
        r#"{"signal":"BOGUS"}"#,
    );
    assert_eq!(bad_sig.status, 400);
    assert!(bad_sig.error().contains("BOGUS"));
    let bad_nice = web.post(
        &format!("/api/jobs/{id}/renice"),
        Some(&steer),
        r#"{"nice":40}"#,
    );
    assert_eq!(bad_nice.status, 400);
    assert!(bad_nice.error().contains("-20..19"));
    assert_eq!(
        web.post(
            &format!("/api/jobs/{id}/renice"),
            Some(&steer),
            r#"{"nice":"x"}"#
        )
        .status,
        400
    );
    assert_eq!(
        web.post(
            "/api/jobs/nope-1/signal",
            Some(&steer),
            r#"{"signal":"TERM"}"#
        )
        .status,
        404
    );
    assert_eq!(
        web.post(
            &format!("/api/jobs/{id}/signal"),
            Some(&read),
            r#"{"signal":"TERM"}"#
        )
        .status,
        403
    );

    // Metrics: with a session here, open on n1 (--metrics-open); both
    // pass promtool.
    // The view samples the cluster each second: wait for n4's new vector.
    let blocked_line = "omcluster_node_knob{cluster=\"test-web\",node=\"n4\",knob=\"block\"} 1";
    let m = util::wait_for("n4 blocked in /metrics", Duration::from_secs(10), || {
        let m = web.get("/metrics", Some(&read));
        match m.status {
            200 if m.body.contains(blocked_line) => Ok(m),
            200 => Err("not yet".to_string()),
            code => Err(format!("{code}: {}", m.body)),
        }
    });
    assert!(
        m.body
            .contains("omcluster_node_up{cluster=\"test-web\",node=\"n7\"} 1"),
        "{}",
        m.body
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(m.body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let open = Web {
        ns: c.lan.nodes[1].clone(),
        addr: format!("{}:7947", c.lan.addr(1)),
    };
    assert_eq!(open.get("/metrics", None).status, 200);
    assert_eq!(open.get("/api/cluster", None).status, 401);

    // A death reaches the stream within 5 s of the agent's end.
    c.kill(7);
    let t1 = Instant::now();
    loop {
        let (name, data) = events
            .recv_timeout(Duration::from_secs(10))
            .expect("the stream goes on");
        let n7 = data["status"]["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|x| x["name"] == "n7").cloned());
        if name == "status" && n7.is_some_and(|x| x["state"] != "alive") {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "n7's death never showed"
        );
    }
    eprintln!(
        "n7 not alive on the stream {:.1} s after it was killed",
        t1.elapsed().as_secs_f64()
    );
    assert!(
        t1.elapsed() < Duration::from_secs(5),
        "n7 showed dead after {:?}",
        t1.elapsed()
    );

    // SIGKILL from the page ends the job; omctl run says how.
    let kill = web.post(
        &format!("/api/jobs/{id}/signal"),
        Some(&steer),
        r#"{"signal":"KILL"}"#,
    );
    assert_eq!(kill.status, 200, "{}", kill.body);
    let ended = util::wait_for("omctl run to end", Duration::from_secs(20), || {
        job.try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_string())
    });
    assert_eq!(ended.code(), Some(128 + 9), "{ended:?}");

    // Logging out ends the session.
    assert_eq!(web.post("/api/logout", Some(&steer), "{}").status, 200);
    assert_eq!(web.get("/api/cluster", Some(&steer)).status, 401);
}

/// Where the browser tests put their screenshots; the README's come
/// from there.
fn screenshot_dir() -> std::path::PathBuf {
    lab::browser::screenshot_dir(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Width and height of a PNG.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

mod browser {
    //! The steps of the browser test, in the namespace of the serving node.

    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use fantoccini::{Client, Locator};
    use serde_json::Value;

    /// Runs `script` (a function body returning a value) in the page.
    pub async fn js(c: &Client, script: &str) -> Value {
        lab::browser::js(c, script).await.unwrap()
    }

    /// Waits until `script` returns true; panics naming `what` after `limit`.
    pub async fn until(c: &Client, what: &str, limit: Duration, script: &str) -> Duration {
        lab::browser::until(c, what, limit, script).await.unwrap()
    }

    /// Clicks the element `css`. The page redraws its tables as events
    /// arrive, so the element found may be replaced before the click
    /// lands: then it is found again (a few times at most).
    pub async fn click(c: &Client, css: &str) {
        for attempt in 1.. {
            let el = c
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match el.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && attempt < 5 => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// Presses `keys` one after the other on the focused element, as a
    /// keyboard would.
    pub async fn press(c: &Client, keys: &[fantoccini::key::Key]) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut a = KeyActions::new("keyboard".into());
        for k in keys {
            let value = char::from(*k);
            a = a
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        c.perform_actions(a).await.expect("pressing keys");
    }

    /// Drags the element `what` onto the element `onto` with the mouse.
    pub async fn drag(c: &Client, what: &str, onto: &str) {
        lab::browser::drag(c, what, onto).await.unwrap()
    }

    /// Shows view `view` (its tab), and waits for `ready`.
    pub async fn tab(c: &Client, view: &str, ready: &str) {
        click(c, &format!("nav [data-view={view}]")).await;
        until(
            c,
            &format!("the {view} view"),
            Duration::from_secs(10),
            ready,
        )
        .await;
    }

    /// Saves the window as `dir/name.png`, once `expect` (a script) says
    /// the view's elements are there; checks its size.
    pub async fn shot(
        c: &Client,
        dir: &Path,
        name: &str,
        size: (u32, u32),
        expect: &str,
    ) -> PathBuf {
        until(
            c,
            &format!("{name}'s elements"),
            Duration::from_secs(10),
            expect,
        )
        .await;
        // Let the last event's drawing settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = c.screenshot().await.unwrap();
        assert_eq!(super::png_size(&png), size, "{name}: screenshot size");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The output of `omctl --socket SOCKET ARGS…`.
    pub fn run_omctl(omctl: &Path, socket: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new(omctl)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap()
    }
}

#[test]
fn web_view_in_chromium_lists_nodes_follows_jobs_and_a_death_and_steers() {
    if !util::netns_tests() || !lab::gate::require(&lab::browser::NEEDS) {
        return;
    }
    let n = 8;
    let mut c = Cluster::new("wbr", 89, n);
    c.start(0, &["--web", "0.0.0.0:7947"]);
    for i in 1..n {
        c.start(i, &[]);
    }
    let all: Vec<usize> = (0..n).collect();
    c.wait_view(0, &all, "everyone");
    let steer_url = link(&c, 0, false, 0).unwrap();
    let read_url = link(&c, 0, true, 0).unwrap();
    let base = steer_url.split_once("/#").unwrap().0.to_string();
    let victim = c.agent_pid(7);
    let (socket, omctl) = (c.socket(0), util::bin("omctl"));
    let dir = screenshot_dir();
    let shots = dir.clone();
    let log = c.dir_path().join("chromedriver.log");
    let ns = c.lan.nodes[0].clone();

    let result = lab::browser::in_netns(&ns.clone(), move |rt| {
        let driver = lab::browser::Driver::start(&ns, 9515, &log).expect("chromedriver");
        rt.block_on(async {
            use browser::*;
            let desk = driver.session(1280, 800, false).await.unwrap();
            desk.goto(&steer_url).await.unwrap();
            // The token leaves the address bar once taken.
            until(&desk, "eight nodes listed", Duration::from_secs(20),
                "return document.querySelectorAll('#nodes tbody tr').length === 8").await;
            assert_eq!(js(&desk, "return location.hash").await, json!(""));
            assert_eq!(js(&desk, "return document.querySelector('#access').textContent").await, json!("can steer"));

            // A job started with omctl shows with its node.
            let mut job = std::process::Command::new(&omctl)
                .arg("--socket").arg(&socket)
                .args(["run", "--node", "n3", "--", "sleep", "300"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            tab(&desk, "jobs", "return !document.querySelector('#view-jobs').hidden").await;
            let shown = until(&desk, "the job's row on n3", Duration::from_secs(10),
                "return [...document.querySelectorAll('#jobs tbody tr')].some(r => r.cells[5]?.textContent === 'n3' && r.cells[2].textContent.startsWith('sleep'))").await;
            eprintln!("job row on the page {:.1} s after the jobs view opened", shown.as_secs_f64());
            // Its CPU, memory and state arrive; Stop holds it, Continue
            // lets it go (the state column follows).
            let state_is = |want: &str| format!("return [...document.querySelectorAll('#jobs tbody tr')].some(r => r.cells[9]?.textContent === '{want}' && r.cells[8].textContent.endsWith('MiB'))");
            until(&desk, "the job measured", Duration::from_secs(10), &state_is("sleeping")).await;
            click(&desk, "#jobs tbody tr input[type=checkbox]").await;
            click(&desk, "#view-jobs button[data-signal=STOP]").await;
            until(&desk, "the job shown stopped", Duration::from_secs(10), &state_is("stopped")).await;
            until(&desk, "the stopped job says why it stays", Duration::from_secs(10),
                "return document.querySelector('#jobs tbody tr').textContent.includes('SIGSTOP')").await;
            shot(&desk, &dir, "jobs-1280x800", (1280, 800), "return document.querySelectorAll('#jobs tbody tr').length >= 1").await;
            click(&desk, "#view-jobs button[data-signal=CONT]").await;
            until(&desk, "the job shown running again", Duration::from_secs(10), &state_is("sleeping")).await;

            // The quota slider sets n2's quota: 50 % by keyboard.
            tab(&desk, "nodes", "return !document.querySelector('#view-nodes').hidden").await;
            js(&desk, "document.querySelector('tr[data-node=n2] input.quota').focus(); return true").await;
            press(&desk, &[fantoccini::key::Key::Home]).await;
            press(&desk, &[fantoccini::key::Key::Right; 9]).await;
            let t0 = Instant::now();
            loop {
                let out = omctl_status(&omctl, &socket);
                let q = out["nodes"].as_array().unwrap().iter().find(|x| x["name"] == "n2").map(|x| x["load"]["cpu_quota"].clone());
                if q == Some(json!(50)) {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(15), "n2's quota never became 50: {q:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }

            // block from its button shows and takes effect.
            click(&desk, "tr[data-node=n4] button[aria-pressed=false]").await;
            until(&desk, "n4 shown blocked", Duration::from_secs(10),
                "return [...document.querySelectorAll('tr[data-node=n4] .knob')].some(k => k.textContent === 'block')").await;
            let st = omctl_status(&omctl, &socket);
            let n4 = st["nodes"].as_array().unwrap().iter().find(|x| x["name"] == "n4").unwrap().clone();
            assert_eq!(n4["load"]["knobs"]["block"], json!(true), "{n4}");
            shot(&desk, &dir, "nodes-1280x800", (1280, 800), "return document.querySelectorAll('#nodes tbody tr').length === 8").await;

            tab(&desk, "monitor", "return document.querySelectorAll('#monitor .node').length === 8").await;
            shot(&desk, &dir, "monitor-1280x800", (1280, 800), "return document.querySelectorAll('#monitor .job').length >= 1").await;
            // Dragging the job's dot onto n5 asks for the move; this host's
            // kernel cannot make it, and the dot says why.
            drag(&desk, "#monitor .job", "#monitor .node[data-node=n5] circle").await;
            let refused = until(&desk, "the refusal on the page and on the dot", Duration::from_secs(20),
                "return document.querySelector('#notice').classList.contains('error') && !!document.querySelector('#monitor .job.failed') && !!document.querySelector('#monitor .reason')").await;
            eprintln!("drag refused on the page after {:.1} s", refused.as_secs_f64());
            tab(&desk, "history", "return !!document.querySelector('#chart canvas')").await;
            shot(&desk, &dir, "history-1280x800", (1280, 800), "return document.querySelectorAll('#moment-jobs tbody tr').length >= 1").await;
            click(&desk, "nav [data-view=nodes]").await;
            click(&desk, "tr[data-node=n3] button.link").await;
            until(&desk, "n3's page lists its job", Duration::from_secs(10),
                "return [...document.querySelectorAll('#node-jobs tbody tr')].some(r => r.textContent.includes('sleep'))").await;
            shot(&desk, &dir, "node-1280x800", (1280, 800), "return document.querySelector('#node-title').textContent === 'Node n3'").await;

            // A killed agent shows down (or suspect, on its way) within 5 s.
            click(&desk, "nav [data-view=nodes]").await;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL).unwrap();
            let dead = until(&desk, "n7 shown not alive", Duration::from_secs(20),
                "return document.querySelector('tr[data-node=n7] .state').textContent !== 'alive'").await;
            eprintln!("n7 shown {} {:.1} s after SIGKILL",
                js(&desk, "return document.querySelector('tr[data-node=n7] .state').textContent").await,
                dead.as_secs_f64());
            assert!(dead < Duration::from_secs(5), "n7 shown dead after {dead:?}");
            desk.close().await.unwrap();

            // A phone with a read-only link: looks, cannot act.
            let phone = driver.session(390, 844, true).await.unwrap();
            phone.goto(&read_url).await.unwrap();
            until(&phone, "the read-only page", Duration::from_secs(20),
                "return document.body.classList.contains('read-only') && document.querySelectorAll('#nodes tbody tr').length === 8").await;
            assert_eq!(js(&phone, "return getComputedStyle(document.querySelector('tr[data-node=n1] td.steer')).display").await, json!("none"));
            let tried = js(&phone, "return fetch('/api/nodes/n1/knob', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({word: 'block'})}).then(r => r.status)").await;
            assert_eq!(tried, json!(403));
            shot(&phone, &dir, "nodes-390x844", (390, 844), "return document.querySelectorAll('#nodes tbody tr').length === 8").await;
            tab(&phone, "jobs", "return document.querySelectorAll('#jobs tbody tr').length >= 1").await;
            shot(&phone, &dir, "jobs-390x844", (390, 844), "return true").await;
            tab(&phone, "monitor", "return document.querySelectorAll('#monitor .node').length === 8").await;
            shot(&phone, &dir, "monitor-390x844", (390, 844), "return document.querySelectorAll('#monitor .job').length >= 1").await;
            tab(&phone, "history", "return !!document.querySelector('#chart canvas')").await;
            shot(&phone, &dir, "history-390x844", (390, 844), "return true").await;
            phone.close().await.unwrap();

            // A wrong token: the login form and why.
            let stranger = driver.session(1280, 800, false).await.unwrap();
            stranger.goto(&format!("{base}/#login=omw1.{}", "0".repeat(64))).await.unwrap();
            until(&stranger, "the login form with the refusal", Duration::from_secs(10),
                "return !document.querySelector('#login').hidden && document.querySelector('#login-error').textContent.includes('unknown')").await;
            assert_eq!(js(&stranger, "return fetch('/api/jobs').then(r => r.status)").await, json!(401));
            stranger.close().await.unwrap();
            let _ = job.kill();
            let _ = job.wait();
        });
        drop(driver);
    });
    result.expect("the browser's namespace");
    eprintln!("screenshots in {}", shots.display());
}

/// `omctl status --json` on the serving node.
fn omctl_status(omctl: &std::path::Path, socket: &std::path::Path) -> Value {
    let out = browser::run_omctl(omctl, socket, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
