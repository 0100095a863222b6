//! Initramfs assembly on host binaries: busybox applets, the agent layout,
//! and the check that every program can run in the image.

use builder::initramfs::{assemble, busybox_applets, InitramfsError, Parts, Program};
use builder::tree::{Node, Tree};

fn parts<'a>(packages: &'a Tree, agent: &str) -> Parts<'a> {
    Parts {
        packages,
        kver: "6.1.0-test-amd64",
        modules: vec![(
            "kernel/x.ko".into(),
            std::sync::Arc::new(b"\x7fELF".to_vec()),
        )],
        module_indexes: vec![("modules.dep".into(), b"kernel/x.ko:\n".to_vec())],
        agent: Program {
            source: agent.into(),
            data: std::fs::read(agent).unwrap(),
        },
        omctl: Some(Program {
            source: agent.into(),
            data: std::fs::read(agent).unwrap(),
        }),
        omboot: None,
        extra: vec![("/etc/motd".into(), b"hi\n".to_vec(), 0o644)],
        multiarch: "x86_64-linux-gnu",
        epoch: 5,
    }
}

#[test]
fn layout_with_a_static_agent() {
    let Some(busybox) = crate::util::tool("busybox") else {
        return;
    };
    let bb = std::fs::read(&busybox).unwrap();
    let applets = busybox_applets(&bb);
    assert!(
        applets.len() > 100 && applets.iter().any(|a| a == "modprobe"),
        "{applets:?}"
    );
    let mut pkgs = Tree::new();
    pkgs.add_file("bin/busybox", bb, 0o755, 0).unwrap();
    let t = assemble(parts(&pkgs, busybox.to_str().unwrap())).unwrap();
    assert_eq!(
        t.get("init").unwrap().node,
        Node::Symlink("bin/omnode".into())
    );
    assert_eq!(
        t.get("bin/sh").unwrap().node,
        Node::Symlink("busybox".into())
    );
    assert_eq!(
        t.get("sbin/modprobe").unwrap().node,
        Node::Symlink("../bin/busybox".into())
    );
    assert_eq!(
        t.get("bin/mosmon").unwrap().node,
        Node::Symlink("omctl".into())
    );
    assert_eq!(t.get("dev/console").unwrap().node, Node::CharDev(5, 1));
    assert!(t.get("lib/modules/6.1.0-test-amd64/kernel/x.ko").is_some());
    assert!(t.get("etc/motd").is_some() && t.get("etc/passwd").is_some());
    assert_eq!(
        t.get("etc/mtab").unwrap().node,
        Node::Symlink("../proc/self/mounts".into())
    );
    assert_eq!(t.get("tmp").unwrap().mode, 0o1777);
}

#[test]
fn a_dynamic_agent_without_its_libraries_is_refused() {
    let Some(busybox) = crate::util::tool("busybox") else {
        return;
    };
    let mut pkgs = Tree::new();
    pkgs.add_file("bin/busybox", std::fs::read(&busybox).unwrap(), 0o755, 0)
        .unwrap();
    // Any dynamically linked host program does; ls is always there.
    let ls = crate::util::tool("ls").unwrap();
    let err = assemble(parts(&pkgs, ls.to_str().unwrap())).unwrap_err();
    let InitramfsError::MissingLibrary { binary, library } = &err else {
        panic!("{err}")
    };
    assert_eq!(binary, "/bin/omctl"); // sorted first of the two copies
    assert_eq!(library, "/lib64/ld-linux-x86-64.so.2");
    assert_eq!(
        err.to_string(),
        "/bin/omctl needs /lib64/ld-linux-x86-64.so.2, which is not in the image"
    );
    // With the loader present, the first missing shared library is named.
    pkgs.add_file(
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        vec![0],
        0o755,
        0,
    )
    .unwrap();
    pkgs.add_symlink(
        "lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        0,
    )
    .unwrap();
    let err = assemble(parts(&pkgs, ls.to_str().unwrap())).unwrap_err();
    assert!(err.to_string().starts_with("/bin/omctl needs lib"), "{err}");
    assert!(err.to_string().contains(".so"), "{err}");
}

#[test]
fn a_non_elf_agent_is_refused() {
    let Some(busybox) = crate::util::tool("busybox") else {
        return;
    };
    let mut pkgs = Tree::new();
    pkgs.add_file("bin/busybox", std::fs::read(&busybox).unwrap(), 0o755, 0)
        .unwrap();
    let script = crate::util::workspace().join("images/node.toml");
    let err = assemble(parts(&pkgs, script.to_str().unwrap())).unwrap_err();
    assert!(err.to_string().starts_with("agent ("), "{err}");
    assert!(
        err.to_string()
            .ends_with("is not an ELF program: not an ELF file"),
        "{err}"
    );
}

/// A program finds libraries in its own `DT_RUNPATH` (nfs-ganesha keeps
/// its own in /usr/lib/ganesha), `$ORIGIN` being its folder.
#[test]
fn run_path_is_read() {
    let Some(cc) = crate::util::tool("cc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("p.c");
    std::fs::write(
        &src,
        "extern int omx(void); int main(void) { return omx(); }\n",
    )
    .unwrap();
    let lib_src = dir.path().join("l.c");
    std::fs::write(&lib_src, "int omx(void) { return 0; }\n").unwrap();
    let lib = dir.path().join("libomx.so");
    let prog = dir.path().join("prog");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(&cc).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        lib.as_os_str(),
        lib_src.as_os_str(),
    ]);
    run(&[
        "-o".as_ref(),
        prog.as_os_str(),
        src.as_os_str(),
        "-L".as_ref(),
        dir.path().as_os_str(),
        "-lomx".as_ref(),
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib/omx".as_ref(),
    ]);
    let data = std::fs::read(&prog).unwrap();
    let needs = builder::elf::needs(&data).unwrap();
    assert_eq!(needs.runpath, ["$ORIGIN/../lib/omx"]);
    assert!(
        needs.libraries.iter().any(|l| l == "libomx.so"),
        "{needs:?}"
    );

    let mut t = Tree::new();
    t.add_file("usr/bin/prog", data, 0o755, 0).unwrap();
    let interp = needs.interpreter.clone().unwrap();
    t.add_file(interp.trim_start_matches('/'), vec![0], 0o755, 0)
        .unwrap();
    for l in needs.libraries.iter().filter(|l| *l != "libomx.so") {
        t.add_file(&format!("lib/x86_64-linux-gnu/{l}"), vec![0], 0o644, 0)
            .unwrap();
    }
    let err = builder::initramfs::check_runnable(&t, "x86_64-linux-gnu").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/usr/bin/prog needs libomx.so, which is not in the image"
    );
    t.add_file("usr/lib/omx/libomx.so", vec![0], 0o644, 0)
        .unwrap();
    builder::initramfs::check_runnable(&t, "x86_64-linux-gnu").unwrap();
}
