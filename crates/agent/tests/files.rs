//! File operations through the real agent binary.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Agent, TempDir};
use repobox_protocol::{ErrorKind, Kind, Reply, Request};

fn error_kind(reply: &Reply) -> ErrorKind {
    match reply {
        Reply::Error { kind, .. } => *kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn request(agent: &Agent, request: &Request) -> Reply {
    agent.open(request).final_reply().await
}

async fn write(agent: &Agent, path: &str, data: &[u8], mode: u32, create_parents: bool) -> Reply {
    let mut op = agent.open(&Request::Write {
        path: path.to_owned(),
        mode,
        create_parents,
    });
    op.upload(data).await
}

async fn read(agent: &Agent, path: &str) -> Result<Vec<u8>, Reply> {
    agent
        .open(&Request::Read {
            path: path.to_owned(),
        })
        .download()
        .await
        .map(|(_, data)| data)
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn stat_and_list_with_odd_names() {
    let agent = Agent::start().await;
    let dir = TempDir::new("list");
    let p = dir.path();
    std::fs::write(p.join("new\nline"), b"12345").unwrap();
    std::fs::write(p.join("sp ace"), b"").unwrap();
    std::fs::write(p.join(OsStr::from_bytes(b"bad\xffbyte")), b"x").unwrap();
    std::fs::create_dir(p.join("empty")).unwrap();
    symlink("sp ace", p.join("link")).unwrap();
    symlink("nowhere", p.join("dangling")).unwrap();
    std::fs::set_permissions(p.join("new\nline"), std::fs::Permissions::from_mode(0o640)).unwrap();

    let Reply::Listing { entries, .. } = request(
        &agent,
        &Request::List {
            path: dir.join(""),
            offset: 0,
        },
    )
    .await
    else {
        panic!()
    };
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "bad\u{fffd}byte",
            "dangling",
            "empty",
            "link",
            "new\nline",
            "sp ace"
        ]
    );
    let by_name: BTreeMap<_, _> = entries.iter().map(|e| (e.name.as_str(), &e.stat)).collect();
    assert_eq!(by_name["new\nline"].kind, Kind::File);
    assert_eq!(by_name["new\nline"].size, 5);
    assert_eq!(by_name["new\nline"].mode, 0o640);
    assert_eq!(by_name["empty"].kind, Kind::Directory);
    assert_eq!(by_name["link"].kind, Kind::Symlink);
    assert_eq!(by_name["link"].link_target.as_deref(), Some("sp ace"));
    assert_eq!(by_name["dangling"].link_target.as_deref(), Some("nowhere"));

    // An empty directory.
    let Reply::Listing { entries, .. } = request(
        &agent,
        &Request::List {
            path: dir.join("empty"),
            offset: 0,
        },
    )
    .await
    else {
        panic!()
    };
    assert!(entries.is_empty());

    // Stat, following or not.
    let stat = |path: String, follow: bool| Request::Stat { path, follow };
    let Reply::Stat { stat: Some(link) } = request(&agent, &stat(dir.join("link"), false)).await
    else {
        panic!()
    };
    assert_eq!(link.kind, Kind::Symlink);
    assert_eq!(link.size, 6);
    let Reply::Stat { stat: Some(target) } = request(&agent, &stat(dir.join("link"), true)).await
    else {
        panic!()
    };
    assert_eq!(target.kind, Kind::File);
    assert_eq!(target.link_target, None);
    let meta = std::fs::metadata(p.join("new\nline")).unwrap();
    let Reply::Stat { stat: Some(file) } =
        request(&agent, &stat(dir.join("new\nline"), false)).await
    else {
        panic!()
    };
    assert_eq!(file.mtime_secs, meta.mtime());
    assert_eq!(i64::from(file.mtime_nanos), meta.mtime_nsec());
    assert_eq!(
        request(&agent, &stat(dir.join("missing"), false)).await,
        Reply::Stat { stat: None }
    );
    assert_eq!(
        request(&agent, &stat(dir.join("dangling"), true)).await,
        Reply::Stat { stat: None }
    );
    let reply = request(&agent, &stat(dir.join("sp ace/below"), false)).await;
    assert_eq!(error_kind(&reply), ErrorKind::NotDirectory);
}

#[tokio::test]
async fn a_large_directory_is_listed_in_pages() {
    let agent = Agent::start().await;
    let dir = TempDir::new("pages");
    let count = repobox_protocol::LIST_PAGE as usize * 2 + 7;
    for n in 0..count {
        std::fs::write(dir.path().join(format!("f{n:05}")), b"").unwrap();
    }
    let mut names = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    while offset < count as u64 {
        let Reply::Listing {
            entries,
            total,
            next,
        } = request(
            &agent,
            &Request::List {
                path: dir.join(""),
                offset,
            },
        )
        .await
        else {
            panic!()
        };
        assert_eq!(total, count as u64);
        assert!(entries.len() <= repobox_protocol::LIST_PAGE as usize);
        assert_eq!(next, offset + entries.len() as u64);
        offset = next;
        pages += 1;
        names.extend(entries.into_iter().map(|entry| entry.name));
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..count).map(|n| format!("f{n:05}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn list_errors() {
    let agent = Agent::start().await;
    let dir = TempDir::new("listerr");
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let reply = request(
        &agent,
        &Request::List {
            path: dir.join("missing"),
            offset: 0,
        },
    )
    .await;
    assert_eq!(error_kind(&reply), ErrorKind::NotFound);
    let reply = request(
        &agent,
        &Request::List {
            path: dir.join("file"),
            offset: 0,
        },
    )
    .await;
    assert_eq!(error_kind(&reply), ErrorKind::NotDirectory);
    let reply = request(
        &agent,
        &Request::List {
            path: "relative".into(),
            offset: 0,
        },
    )
    .await;
    assert_eq!(error_kind(&reply), ErrorKind::Invalid);
}

#[tokio::test]
async fn write_and_read_a_large_binary_file() {
    let agent = Agent::start().await;
    let dir = TempDir::new("rw");
    let data = pseudo_random(5 * 1024 * 1024 + 12345, 42);
    let path = dir.join("blob.bin");
    let reply = write(&agent, &path, &data, 0o751, false).await;
    let Reply::Done { stat: Some(stat) } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(stat.kind, Kind::File);
    assert_eq!(stat.size, data.len() as u64);
    assert_eq!(stat.mode, 0o751);
    assert!(std::fs::read(dir.path().join("blob.bin")).unwrap() == data);

    let mut op = agent.open(&Request::Read { path: path.clone() });
    let (stat, back) = op.download().await.unwrap();
    assert_eq!(stat.size, data.len() as u64);
    assert!(back == data, "read back differs");

    // Overwrite with less; no temporary file is left.
    let reply = write(&agent, &path, b"small", 0o644, false).await;
    assert!(matches!(reply, Reply::Done { stat: Some(ref s) } if s.size == 5 && s.mode == 0o644));
    assert_eq!(read(&agent, &path).await.unwrap(), b"small");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("blob.bin")]);

    // An empty file.
    let reply = write(&agent, &dir.join("empty"), b"", 0o600, false).await;
    assert!(matches!(reply, Reply::Done { stat: Some(ref s) } if s.size == 0));
    assert_eq!(read(&agent, &dir.join("empty")).await.unwrap(), b"");
}

#[tokio::test]
async fn write_through_a_symlink_and_with_parents() {
    let agent = Agent::start().await;
    let dir = TempDir::new("wlink");
    let p = dir.path();
    std::fs::create_dir(p.join("real")).unwrap();
    std::fs::write(p.join("real/target"), b"old").unwrap();
    symlink("real/target", p.join("link")).unwrap();
    symlink(p.join("link"), p.join("link2")).unwrap();

    let reply = write(&agent, &dir.join("link2"), b"new", 0o644, false).await;
    assert!(
        matches!(reply, Reply::Done { stat: Some(ref s) } if s.kind == Kind::File),
        "{reply:?}"
    );
    assert_eq!(std::fs::read(p.join("real/target")).unwrap(), b"new");
    assert!(
        std::fs::symlink_metadata(p.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(p.join("link2"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A dangling link creates its target.
    symlink("real/created", p.join("dangling")).unwrap();
    write(&agent, &dir.join("dangling"), b"c", 0o644, false).await;
    assert_eq!(std::fs::read(p.join("real/created")).unwrap(), b"c");

    // Parents.
    let deep = dir.join("a/b/c/file");
    let reply = write(&agent, &deep, b"deep", 0o644, false).await;
    assert_eq!(error_kind(&reply), ErrorKind::NotFound);
    let reply = write(&agent, &deep, b"deep", 0o644, true).await;
    assert!(matches!(reply, Reply::Done { .. }), "{reply:?}");
    assert_eq!(std::fs::read(p.join("a/b/c/file")).unwrap(), b"deep");
    assert_eq!(
        std::fs::metadata(p.join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    // Errors.
    let reply = write(&agent, &dir.join("real"), b"x", 0o644, false).await;
    assert_eq!(error_kind(&reply), ErrorKind::IsDirectory);
    let reply = write(&agent, &dir.join("real/target/below"), b"x", 0o644, true).await;
    assert_eq!(error_kind(&reply), ErrorKind::NotDirectory);
}

#[tokio::test]
async fn a_cancelled_write_leaves_the_old_file() {
    let agent = Agent::start().await;
    let dir = TempDir::new("wcancel");
    std::fs::write(dir.path().join("f"), b"old").unwrap();
    let op = agent.open(&Request::Write {
        path: dir.join("f"),
        mode: 0o644,
        create_parents: false,
    });
    op.send_data(b"partial new content");
    tokio::time::sleep(Duration::from_millis(200)).await;
    op.send(&Request::Cancel);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("f")]);
}

#[tokio::test]
async fn read_errors() {
    let agent = Agent::start().await;
    let dir = TempDir::new("rerr");
    assert_eq!(
        error_kind(&read(&agent, &dir.join("missing")).await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(
        error_kind(&read(&agent, &dir.join("")).await.unwrap_err()),
        ErrorKind::IsDirectory
    );
    assert_eq!(
        error_kind(&read(&agent, "/dev/null/x").await.unwrap_err()),
        ErrorKind::NotDirectory
    );
    // A symlink is followed.
    std::fs::write(dir.path().join("t"), b"via link").unwrap();
    symlink("t", dir.path().join("l")).unwrap();
    assert_eq!(read(&agent, &dir.join("l")).await.unwrap(), b"via link");
}

#[tokio::test]
async fn mkdir() {
    let agent = Agent::start().await;
    let dir = TempDir::new("mkdir");
    let reply = request(
        &agent,
        &Request::Mkdir {
            path: dir.join("x/y/z"),
        },
    )
    .await;
    assert_eq!(reply, Reply::Done { stat: None });
    assert!(
        std::fs::metadata(dir.path().join("x/y/z"))
            .unwrap()
            .is_dir()
    );
    // Again: fine.
    let reply = request(
        &agent,
        &Request::Mkdir {
            path: dir.join("x/y/z"),
        },
    )
    .await;
    assert_eq!(reply, Reply::Done { stat: None });
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let reply = request(
        &agent,
        &Request::Mkdir {
            path: dir.join("file/sub"),
        },
    )
    .await;
    assert_eq!(error_kind(&reply), ErrorKind::NotDirectory);
    let reply = request(
        &agent,
        &Request::Mkdir {
            path: dir.join("file"),
        },
    )
    .await;
    assert_eq!(error_kind(&reply), ErrorKind::NotDirectory);
}

/// A tree as a map: relative path → (kind, mode, content or link target, mtime of files).
fn snapshot(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>, i64)> {
    let mut map = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<String, (String, u32, Vec<u8>, i64)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                map.insert(
                    rel,
                    ("link".into(), 0, target.as_os_str().as_bytes().to_vec(), 0),
                );
            } else if meta.is_dir() {
                map.insert(rel, ("dir".into(), mode, Vec::new(), 0));
                walk(root, &path, map);
            } else {
                map.insert(
                    rel,
                    (
                        "file".into(),
                        mode,
                        std::fs::read(&path).unwrap(),
                        meta.mtime(),
                    ),
                );
            }
        }
    }
    walk(root, root, &mut map);
    map
}

#[tokio::test]
async fn archive_out_then_in_gives_the_same_tree() {
    let agent = Agent::start().await;
    let src = TempDir::new("aout");
    let tree = src.path().join("tree");
    let long = "l".repeat(120);
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::create_dir_all(tree.join(format!("sub/{long}"))).unwrap();
    std::fs::write(tree.join("a.txt"), b"hello").unwrap();
    std::fs::write(tree.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tree.join("sub/deeper/secret"), b"s").unwrap();
    std::fs::set_permissions(
        tree.join("sub/deeper/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(
        tree.join(format!("sub/{long}/{long}.bin")),
        pseudo_random(300_000, 7),
    )
    .unwrap();
    std::fs::write(tree.join("sub/big"), pseudo_random(3 * 1024 * 1024, 9)).unwrap();
    symlink("../a.txt", tree.join("sub/link")).unwrap();
    symlink(format!("/somewhere/{long}/{long}"), tree.join("longlink")).unwrap();
    std::fs::set_permissions(tree.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();

    let mut op = agent.open(&Request::ArchiveOut {
        path: tree.to_str().unwrap().to_owned(),
    });
    let (stat, tar) = op.download().await.unwrap();
    assert_eq!(stat.kind, Kind::Directory);
    assert_eq!(tar.len() % 512, 0);

    let dest = TempDir::new("ain");
    let mut op = agent.open(&Request::ArchiveIn {
        path: dest.join(""),
    });
    let reply = op.upload(&tar).await;
    assert_eq!(reply, Reply::Done { stat: None });
    assert_eq!(snapshot(&tree), snapshot(&dest.path().join("tree")));

    // Again over the existing tree: the same.
    let mut op = agent.open(&Request::ArchiveIn {
        path: dest.join(""),
    });
    assert_eq!(op.upload(&tar).await, Reply::Done { stat: None });
    assert_eq!(snapshot(&tree), snapshot(&dest.path().join("tree")));

    // A single file is archived under its base name.
    let mut op = agent.open(&Request::ArchiveOut {
        path: tree.join("a.txt").to_str().unwrap().to_owned(),
    });
    let (stat, tar) = op.download().await.unwrap();
    assert_eq!(stat.kind, Kind::File);
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<_> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().into_owned())
        .collect();
    assert_eq!(names, vec![Path::new("a.txt").to_path_buf()]);
}

fn tar_with_raw_name(name: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"evil"[..]).unwrap();
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn archive_in_refuses_entries_outside() {
    let agent = Agent::start().await;
    let dir = TempDir::new("evil");
    std::fs::create_dir(dir.path().join("inside")).unwrap();
    for name in [&b"../evil"[..], b"a/../../evil", b"/tmp/evil-abs"] {
        let mut op = agent.open(&Request::ArchiveIn {
            path: dir.join("inside"),
        });
        let reply = op.upload(&tar_with_raw_name(name)).await;
        assert_eq!(error_kind(&reply), ErrorKind::Invalid, "{reply:?}");
    }
    assert!(!dir.path().join("evil").exists());

    // Through a symlink the archive itself planted.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder
        .append_link(&mut header, "escape", dir.path())
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "escape/evil", &b"evil"[..])
        .unwrap();
    let mut op = agent.open(&Request::ArchiveIn {
        path: dir.join("inside"),
    });
    let reply = op.upload(&builder.into_inner().unwrap()).await;
    assert_eq!(error_kind(&reply), ErrorKind::Invalid, "{reply:?}");
    assert!(!dir.path().join("evil").exists());
}

#[tokio::test]
async fn archive_errors() {
    let agent = Agent::start().await;
    let dir = TempDir::new("aerr");
    std::fs::write(dir.path().join("file"), b"").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let mut op = agent.open(&Request::ArchiveIn {
        path: dir.join("missing"),
    });
    assert_eq!(error_kind(&op.final_reply().await), ErrorKind::NotFound);
    let mut op = agent.open(&Request::ArchiveIn {
        path: dir.join("file"),
    });
    assert_eq!(error_kind(&op.final_reply().await), ErrorKind::NotDirectory);
    let mut op = agent.open(&Request::ArchiveOut {
        path: dir.join("missing"),
    });
    assert_eq!(
        error_kind(&op.download().await.unwrap_err()),
        ErrorKind::NotFound
    );
    // Malformed.
    let mut op = agent.open(&Request::ArchiveIn {
        path: dir.join("d"),
    });
    let reply = op.upload(&[0x55u8; 2048]).await;
    assert_eq!(error_kind(&reply), ErrorKind::Invalid, "{reply:?}");
    // A file over a directory.
    std::fs::create_dir(dir.path().join("d/x")).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder.append_data(&mut header, "x", &b"1"[..]).unwrap();
    let mut op = agent.open(&Request::ArchiveIn {
        path: dir.join("d"),
    });
    let reply = op.upload(&builder.into_inner().unwrap()).await;
    assert_eq!(error_kind(&reply), ErrorKind::Invalid, "{reply:?}");
    assert!(format!("{reply:?}").contains("cannot overwrite directory"));
}

#[tokio::test]
async fn archive_in_of_a_checkout_is_fast() {
    let agent = Agent::start().await;
    let dest = TempDir::new("checkout");
    // 5,000 files, 50 MB, in 100 directories, as the server's upload names them.
    let mut builder = tar::Builder::new(Vec::new());
    let content = pseudo_random(10_000, 3);
    for d in 0..100 {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, format!("workspace/dir{d}/"), std::io::empty())
            .unwrap();
        for f in 0..50 {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            builder
                .append_data(
                    &mut header,
                    format!("workspace/dir{d}/file{f}.rs"),
                    &content[..],
                )
                .unwrap();
        }
    }
    let tar = builder.into_inner().unwrap();
    let start = Instant::now();
    let mut op = agent.open(&Request::ArchiveIn {
        path: dest.join(""),
    });
    assert_eq!(op.upload(&tar).await, Reply::Done { stat: None });
    let elapsed = start.elapsed();
    eprintln!(
        "archive in of {} MB, 5000 files: {elapsed:?}",
        tar.len() / 1_000_000
    );
    assert_eq!(
        std::fs::read(dest.path().join("workspace/dir99/file49.rs")).unwrap(),
        content
    );
    assert_eq!(
        std::fs::metadata(dest.path().join("workspace/dir3/file4.rs"))
            .unwrap()
            .mtime(),
        1_700_000_000
    );
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

#[tokio::test]
async fn archive_in_hard_links_owners_and_times() {
    let agent = Agent::start().await;
    let dir = TempDir::new("hardlink");
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o640);
    header.set_uid(1234);
    header.set_gid(4321);
    header.set_mtime(1_600_000_000);
    builder
        .append_data(&mut header, "d/orig", &b"data"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Link);
    header.set_size(0);
    builder.append_link(&mut header, "hl", "d/orig").unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o750);
    header.set_mtime(1_500_000_000);
    builder
        .append_data(&mut header, "d", std::io::empty())
        .unwrap();
    let mut op = agent.open(&Request::ArchiveIn { path: dir.join("") });
    assert_eq!(
        op.upload(&builder.into_inner().unwrap()).await,
        Reply::Done { stat: None }
    );
    let orig = std::fs::metadata(dir.path().join("d/orig")).unwrap();
    let link = std::fs::metadata(dir.path().join("hl")).unwrap();
    assert_eq!(orig.ino(), link.ino());
    assert_eq!(orig.mode() & 0o7777, 0o640);
    assert_eq!(orig.mtime(), 1_600_000_000);
    let d = std::fs::metadata(dir.path().join("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o750);
    assert_eq!(d.mtime(), 1_500_000_000);
    if nix::unistd::geteuid().is_root() {
        assert_eq!((orig.uid(), orig.gid()), (1234, 4321));
    }
}

#[tokio::test]
async fn a_write_keeps_the_owner_of_the_file_it_replaces() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let agent = Agent::start().await;
    let dir = TempDir::new("owner");
    let path = dir.path().join("owned");
    std::fs::write(&path, b"old").unwrap();
    std::os::unix::fs::chown(&path, Some(1234), Some(4321)).unwrap();
    write(&agent, &dir.join("owned"), b"new", 0o600, false).await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 4321, 0o600)
    );
}
