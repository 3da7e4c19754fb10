//! The probe: runs inside remote-execution actions and prints one JSON report
//! about the sandbox it finds there. The contract is docs/probe.md.
//!
//! Standard library only, built static with `panic=abort`, so nothing here may
//! panic: whatever fails becomes `null` in the report and a line in `errors`.
//! It never opens a network connection.

use std::ffi::{c_char, c_int, c_uint, CStr, OsStr};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

const PROBE_VERSION: i64 = 2;
/// `--read` reports at most this much of a file.
const CONTENT_LIMIT: u64 = 64 * 1024;
/// Mount tables of busy hosts are long; a sandbox's fits easily in this.
const MOUNTINFO_LIMIT: u64 = 1024 * 1024;

// ---------------------------------------------------------------- libc

/// `struct utsname` as glibc lays it out on Linux (six 65-byte fields).
#[repr(C)]
struct Utsname {
    sysname: [c_char; 65],
    nodename: [c_char; 65],
    release: [c_char; 65],
    _version: [c_char; 65],
    machine: [c_char; 65],
    _domainname: [c_char; 65],
}

/// One entry of the array returned by `if_nameindex(3)`.
#[repr(C)]
struct IfNameIndex {
    _index: c_uint,
    name: *mut c_char,
}

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn geteuid() -> u32;
    fn getegid() -> u32;
    fn getppid() -> i32;
    fn uname(buf: *mut Utsname) -> c_int;
    fn if_nameindex() -> *mut IfNameIndex;
    fn if_freenameindex(list: *mut IfNameIndex);
}

// ---------------------------------------------------------------- JSON

#[derive(Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    /// Keys keep insertion order; callers avoid duplicates.
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_string())
    }

    fn strings(items: impl IntoIterator<Item = String>) -> Json {
        Json::Arr(items.into_iter().map(Json::Str).collect())
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => out.push_str(&n.to_string()),
            Json::Str(s) => write_json_string(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    write_json_string(out, key);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string literal per RFC 8259: quote, backslash and every control
/// character escaped.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Sets `key` in an object, replacing an earlier value so keys stay unique.
fn set(fields: &mut Vec<(String, Json)>, key: &str, value: Json) {
    match fields.iter_mut().find(|(k, _)| k == key) {
        Some(field) => field.1 = value,
        None => fields.push((key.to_string(), value)),
    }
}

/// Records why something could not be read and stands in for it.
fn null_because(errors: &mut Vec<String>, what: &str, err: impl std::fmt::Display) -> Json {
    errors.push(format!("{what}: {err}"));
    Json::Null
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------- directives

/// The directive tokens: the `-c` script split on white space, as when run as
/// `sh -c -e SCRIPT`, or else the arguments themselves.
fn directive_tokens(argv: &[String], errors: &mut Vec<String>) -> Vec<String> {
    let args = argv.get(1..).unwrap_or_default();
    if args.first().map(String::as_str) != Some("-c") {
        return args.to_vec();
    }
    // Shell options such as `-e` or `-ex` may sit between `-c` and the script;
    // the script itself may start with `--`, so only single-dash letters count.
    let is_shell_option = |arg: &&String| matches!(arg.strip_prefix('-'), Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphabetic()));
    match args.iter().skip(1).find(|arg| !is_shell_option(arg)) {
        Some(script) => script.split_ascii_whitespace().map(String::from).collect(),
        None => {
            errors.push("-c: no script argument".to_string());
            Vec::new()
        }
    }
}

/// What the directives did and asked for, in the order they came.
#[derive(Default)]
struct Run {
    paths: Vec<(String, Json)>,
    lists: Vec<(String, Json)>,
    writable: Vec<(String, Json)>,
    writes: Vec<(String, Json)>,
    removed: Vec<(String, Json)>,
    unknown: Vec<String>,
    exit_status: i32,
    quiet: bool,
}

impl Run {
    fn execute(&mut self, tokens: Vec<String>, errors: &mut Vec<String>) {
        let mut tokens = tokens.into_iter();
        while let Some(token) = tokens.next() {
            match token.as_str() {
                "--quiet" => self.quiet = true,
                "--read" | "--list" | "--writable" | "--write" | "--symlink" | "--remove" | "--stderr" | "--exit"
                | "--sleep" => match tokens.next() {
                    Some(arg) => self.apply(&token, &arg, errors),
                    None => errors.push(format!("{token}: missing argument")),
                },
                _ => self.unknown.push(token),
            }
        }
    }

    fn apply(&mut self, directive: &str, arg: &str, errors: &mut Vec<String>) {
        match directive {
            "--read" => set(&mut self.paths, arg, describe_path(arg, errors)),
            "--list" => set(&mut self.lists, arg, dir_entries(arg, "--list", errors)),
            "--writable" => set(&mut self.writable, arg, Json::Bool(can_create_file_in(arg, errors))),
            "--write" => match arg.split_once('=') {
                Some((path, content)) => {
                    let written = write_file(path, &content.replace("\\n", "\n"));
                    if let Err(e) = &written {
                        errors.push(format!("--write {path}: {e}"));
                    }
                    set(&mut self.writes, path, Json::Bool(written.is_ok()));
                }
                None => errors.push(format!("--write {arg}: expected PATH=CONTENT")),
            },
            "--symlink" => match arg.split_once('=') {
                Some((path, target)) => {
                    let made = std::os::unix::fs::symlink(target, path);
                    if let Err(e) = &made {
                        errors.push(format!("--symlink {path}: {e}"));
                    }
                    set(&mut self.writes, path, Json::Bool(made.is_ok()));
                }
                None => errors.push(format!("--symlink {arg}: expected PATH=TARGET")),
            },
            // A file that is not there is an answer, not an error.
            "--remove" => set(&mut self.removed, arg, Json::Bool(fs::remove_file(arg).is_ok())),
            "--stderr" => {
                // Nowhere to report a failed write to stderr; carry on.
                let _ = io::stderr().write_all(format!("{arg}\n").as_bytes());
            }
            "--exit" => match arg.parse() {
                Ok(status) => self.exit_status = status,
                Err(e) => errors.push(format!("--exit {arg}: {e}")),
            },
            "--sleep" => match arg.parse() {
                Ok(ms) => std::thread::sleep(Duration::from_millis(ms)),
                Err(e) => errors.push(format!("--sleep {arg}: {e}")),
            },
            // Not reached: `execute` only passes the directives matched above.
            _ => self.unknown.push(directive.to_string()),
        }
    }
}

fn write_file(path: &str, content: &str) -> io::Result<()> {
    if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, content)
}

/// Whether a new file can be created in `dir`. Not being able to is an
/// answer, not an error; failing to clean up after success is an error.
fn can_create_file_in(dir: &str, errors: &mut Vec<String>) -> bool {
    let file = Path::new(dir).join(format!(".reapi-probe-{}", std::process::id()));
    let created = fs::OpenOptions::new().write(true).create_new(true).open(&file);
    if created.is_ok() {
        if let Err(e) = fs::remove_file(&file) {
            errors.push(format!("--writable {dir}: removing {}: {e}", file.display()));
        }
    }
    created.is_ok()
}

// ---------------------------------------------------------------- file system

fn read_capped(path: impl AsRef<Path>, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Tells whether a file type is of one kind.
type IsKind = fn(&fs::FileType) -> bool;

fn type_name(t: fs::FileType) -> &'static str {
    let kinds: [(IsKind, &'static str); 7] = [
        (fs::FileType::is_dir, "dir"),
        (fs::FileType::is_file, "file"),
        (fs::FileType::is_symlink, "symlink"),
        (FileTypeExt::is_char_device, "char-device"),
        (FileTypeExt::is_block_device, "block-device"),
        (FileTypeExt::is_fifo, "fifo"),
        (FileTypeExt::is_socket, "socket"),
    ];
    kinds.iter().find(|(is_kind, _)| is_kind(&t)).map_or("other", |(_, name)| name)
}

/// `exists`, `type`, `mode`, `executable` and `size` from a (l)stat result.
/// A missing path is `exists: false`; any other failure is `null` and an error.
fn stat_fields(what: &str, stat: io::Result<fs::Metadata>, errors: &mut Vec<String>) -> Vec<(String, Json)> {
    let (exists, meta) = match stat {
        Ok(meta) => (Json::Bool(true), Some(meta)),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            (Json::Bool(false), None)
        }
        Err(e) => (null_because(errors, what, e), None),
    };
    let from_meta = |f: &dyn Fn(&fs::Metadata) -> Json| meta.as_ref().map_or(Json::Null, f);
    vec![
        ("exists".to_string(), exists),
        ("type".to_string(), from_meta(&|m| Json::str(type_name(m.file_type())))),
        ("mode".to_string(), from_meta(&|m| Json::Str(format!("{:04o}", m.mode() & 0o7777)))),
        ("executable".to_string(), from_meta(&|m| Json::Bool(m.is_file() && m.mode() & 0o111 != 0))),
        ("size".to_string(), from_meta(&|m| Json::Int(i64::try_from(m.len()).unwrap_or(i64::MAX)))),
        ("mtime".to_string(), from_meta(&|m| Json::Int(m.mtime()))),
    ]
}

/// The `paths` entry for `--read PATH`.
fn describe_path(path: &str, errors: &mut Vec<String>) -> Json {
    let lstat = fs::symlink_metadata(path);
    let is_symlink = matches!(&lstat, Ok(m) if m.file_type().is_symlink());
    let mut has_content = matches!(&lstat, Ok(m) if m.is_file());
    let mut fields = stat_fields(&format!("--read {path}: lstat"), lstat, errors);

    let (link_target, resolved) = if is_symlink {
        let target = match fs::read_link(path) {
            Ok(t) => Json::Str(lossy(t.as_os_str())),
            Err(e) => null_because(errors, &format!("--read {path}: readlink"), e),
        };
        let stat = fs::metadata(path);
        has_content = matches!(&stat, Ok(m) if m.is_file());
        (target, Json::Obj(stat_fields(&format!("--read {path}: stat"), stat, errors)))
    } else {
        (Json::Null, Json::Null)
    };
    // Only regular files: opening a fifo or device could block or never end.
    let content = if has_content {
        match read_capped(path, CONTENT_LIMIT) {
            Ok(bytes) => Json::Str(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => null_because(errors, &format!("--read {path}: read"), e),
        }
    } else {
        Json::Null
    };
    fields.push(("content".to_string(), content));
    // Whether the path leads somewhere once symlinks are followed
    // (/dev/stdin -> /proc/self/fd/0 dangles without /proc).
    fields.push(("reachable".to_string(), Json::Bool(fs::metadata(path).is_ok())));
    fields.push(("link_target".to_string(), link_target));
    fields.push(("resolved".to_string(), resolved));
    Json::Obj(fields)
}

/// Each entry of directory `dir` and its type, sorted by name; `what`
/// prefixes error messages.
fn dir_entries(dir: &str, what: &str, errors: &mut Vec<String>) -> Json {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return null_because(errors, &format!("{what}: read_dir {dir}"), e),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => errors.push(format!("{what}: read_dir {dir}: {e}")),
        }
    }
    names.sort();
    let fields = names
        .into_iter()
        .map(|name| {
            let kind = match fs::symlink_metadata(Path::new(dir).join(&name)) {
                Ok(meta) => Json::str(match type_name(meta.file_type()) {
                    t @ ("dir" | "file" | "symlink") => t,
                    _ => "other",
                }),
                Err(e) => null_because(errors, &format!("{what}: lstat {dir}/{}", lossy(&name)), e),
            };
            (lossy(&name), kind)
        })
        .collect();
    Json::Obj(fields)
}

fn mountinfo(errors: &mut Vec<String>) -> Json {
    match read_capped("/proc/self/mountinfo", MOUNTINFO_LIMIT) {
        Ok(bytes) => Json::strings(String::from_utf8_lossy(&bytes).lines().map(String::from)),
        Err(e) => null_because(errors, "mountinfo: /proc/self/mountinfo", e),
    }
}

/// Numeric entries of `/proc`. A mounted procfs always lists at least the
/// probe itself, so none at all means `/proc` is an empty directory.
fn pids(errors: &mut Vec<String>) -> Json {
    let entries = match fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(e) => return null_because(errors, "pids: read_dir /proc", e),
    };
    let mut pids: Vec<u32> = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect();
    if pids.is_empty() {
        return null_because(errors, "pids: /proc", "no process entries (procfs not mounted)");
    }
    pids.sort_unstable();
    Json::Arr(pids.into_iter().map(|pid| Json::Int(pid.into())).collect())
}

/// Parent and name of each visible process, from `/proc/PID/stat`, so the
/// harness can tell the probe's ancestors from anything else in its PID
/// namespace. A process gone since the listing is left out.
fn processes(pids: &Json) -> Json {
    let Json::Arr(pids) = pids else { return Json::Null };
    let mut out = Vec::new();
    for pid in pids {
        let Json::Int(pid) = pid else { continue };
        let Ok(stat) = read_capped(format!("/proc/{pid}/stat"), 4096) else { continue };
        let stat = String::from_utf8_lossy(&stat);
        // "PID (NAME) STATE PPID ...": NAME may hold ')' itself, so split at the last one.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat.get(open + 1..close).unwrap_or_default().to_string();
        let ppid = stat.get(close + 1..).and_then(|rest| rest.split_whitespace().nth(1)?.parse::<i64>().ok());
        out.push(Json::Obj(vec![
            ("pid".to_string(), Json::Int(*pid)),
            ("ppid".to_string(), ppid.map_or(Json::Null, Json::Int)),
            ("name".to_string(), Json::Str(name)),
        ]));
    }
    Json::Arr(out)
}

/// Inode numbers of the probe's PID, mount and network namespaces: two
/// processes with the same number on one boot share that namespace.
fn namespaces(errors: &mut Vec<String>) -> Json {
    let mut fields = Vec::new();
    for kind in ["pid", "mnt", "net"] {
        let value = match fs::read_link(format!("/proc/self/ns/{kind}")) {
            // The link reads "pid:[4026531836]".
            Ok(target) => lossy(target.as_os_str())
                .rsplit_once('[')
                .and_then(|(_, rest)| rest.trim_end_matches(']').parse::<i64>().ok())
                .map_or(Json::Null, Json::Int),
            Err(e) => null_because(errors, &format!("namespaces: /proc/self/ns/{kind}"), e),
        };
        fields.push((kind.to_string(), value));
    }
    Json::Obj(fields)
}

/// The kernel's boot id: equal on two reports only when both ran on one
/// machine (and boot), which is what makes namespace numbers comparable.
fn boot_id(errors: &mut Vec<String>) -> Json {
    match read_capped("/proc/sys/kernel/random/boot_id", 64) {
        Ok(bytes) => Json::Str(String::from_utf8_lossy(&bytes).trim().to_string()),
        Err(e) => null_because(errors, "boot_id: /proc/sys/kernel/random/boot_id", e),
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------- libc wrappers

fn c_field(field: &[c_char; 65]) -> String {
    // `as u8` reinterprets the byte whether c_char is signed or not.
    let bytes: Vec<u8> = field.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The machine name in BuildStream's ISA naming, or as is when unknown.
fn isa_name(machine: &str) -> &str {
    match machine {
        "x86_64" => "x86-64",
        "i686" => "x86-32",
        "aarch64" => "aarch64",
        "armv7l" | "armv8l" => "aarch32",
        "ppc64" => "power-isa-be",
        "ppc64le" => "power-isa-le",
        "riscv64" => "rv64g",
        "riscv32" => "rv32g",
        "sparc64" => "sparc-v9",
        "loongarch64" => "la64v100",
        other => other,
    }
}

fn uname_info(errors: &mut Vec<String>) -> Json {
    const EMPTY: [c_char; 65] = [0; 65];
    let mut buf = Utsname {
        sysname: EMPTY,
        nodename: EMPTY,
        release: EMPTY,
        _version: EMPTY,
        machine: EMPTY,
        _domainname: EMPTY,
    };
    // Sound: `buf` is a writable struct with glibc's `struct utsname` layout.
    if unsafe { uname(&mut buf) } != 0 {
        return null_because(errors, "uname", io::Error::last_os_error());
    }
    let machine = c_field(&buf.machine);
    Json::Obj(vec![
        ("sysname".to_string(), Json::Str(c_field(&buf.sysname))),
        ("nodename".to_string(), Json::Str(c_field(&buf.nodename))),
        ("release".to_string(), Json::Str(c_field(&buf.release))),
        ("machine".to_string(), Json::str(&machine)),
        ("isa".to_string(), Json::str(isa_name(&machine))),
    ])
}

/// Interface names from `if_nameindex(3)`. glibc asks the kernel over a
/// local netlink socket; nothing is sent on any network.
fn interfaces(errors: &mut Vec<String>) -> Json {
    // Sound: no arguments; the result is checked for null before use.
    let list = unsafe { if_nameindex() };
    if list.is_null() {
        return null_because(errors, "interfaces: if_nameindex", io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut entry = list;
    loop {
        // Sound: `entry` is within the array, whose last entry has a null name.
        let name = unsafe { (*entry).name };
        if name.is_null() {
            break;
        }
        // Sound: a non-null name is a NUL-terminated string owned by the array.
        names.push(unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned());
        // Sound: this entry was not the terminator, so the next one exists.
        entry = unsafe { entry.add(1) };
    }
    // Sound: `list` came from if_nameindex and is freed exactly once.
    unsafe { if_freenameindex(list) };
    Json::strings(names)
}

// ---------------------------------------------------------------- env mode

/// Runs as `env`: `env [--] [NAME=VALUE]... CMD [ARG]...` execs CMD, found
/// through PATH, with the assignments added. Staged at `/usr/bin/env` because
/// some workers (Buildbarn's chroot runner) start every action as
/// `/usr/bin/env -- argv...` inside the input root, and every real BuildStream
/// root has one. With no CMD it prints the environment, like env(1).
fn env_main(args: Vec<std::ffi::OsString>) -> ! {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;

    let mut args = args.into_iter().skip(1).peekable();
    if args.peek().map(|a| a.as_bytes()) == Some(b"--") {
        args.next();
    }
    let mut assignments = Vec::new();
    while let Some(arg) = args.peek() {
        match arg.as_bytes().iter().position(|&b| b == b'=') {
            Some(eq) if eq > 0 => {
                let bytes = arg.as_bytes();
                assignments
                    .push((OsStr::from_bytes(&bytes[..eq]).to_owned(), OsStr::from_bytes(&bytes[eq + 1..]).to_owned()));
                args.next();
            }
            _ => break,
        }
    }
    let Some(program) = args.next() else {
        let mut out = Vec::new();
        for (name, value) in std::env::vars_os().chain(assignments) {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        let _ = io::stdout().write_all(&out);
        std::process::exit(0);
    };
    // PATH lookup happens after the assignments, as env(1) does it.
    for (name, value) in &assignments {
        std::env::set_var(name, value);
    }
    let err = std::process::Command::new(&program).args(args).exec();
    let _ = writeln!(io::stderr(), "env: {}: {err}", lossy(&program));
    std::process::exit(if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 });
}

// ---------------------------------------------------------------- main

fn main() {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.first().and_then(|a| Path::new(a).file_name()) == Some(OsStr::new("env")) {
        env_main(raw);
    }
    let started_ms = now_ms();
    let argv: Vec<String> = raw.iter().map(|a| lossy(a)).collect();
    let mut errors = Vec::new();
    let tokens = directive_tokens(&argv, &mut errors);
    let mut run = Run::default();
    run.execute(tokens, &mut errors);
    // Directives run in order, so a `--read` after a `--sleep` happened just before this.
    let ended_ms = now_ms();

    let mut env = Vec::new();
    let mut env_order = Vec::new();
    for (name, value) in std::env::vars_os() {
        let name = lossy(&name);
        // getenv(3) sees the first of duplicate names; so does the report.
        if !env.iter().any(|(k, _)| *k == name) {
            env.push((name.clone(), Json::Str(lossy(&value))));
        }
        env_order.push(name);
    }
    let exe = match std::env::current_exe() {
        Ok(path) => Json::Str(lossy(path.as_os_str())),
        Err(e) => null_because(&mut errors, "exe", e),
    };
    let cwd = match std::env::current_dir() {
        Ok(path) => Json::Str(lossy(path.as_os_str())),
        Err(e) => null_because(&mut errors, "cwd", e),
    };
    // Sound: these calls take no arguments and cannot fail.
    let (uid, gid, euid, egid, ppid) = unsafe { (getuid(), getgid(), geteuid(), getegid(), getppid()) };

    let pids = pids(&mut errors);
    let mut report = vec![
        ("probe_version", Json::Int(PROBE_VERSION)),
        ("argv", Json::strings(argv)),
        ("exe", exe),
        ("cwd", cwd),
        ("uid", Json::Int(uid.into())),
        ("gid", Json::Int(gid.into())),
        ("euid", Json::Int(euid.into())),
        ("egid", Json::Int(egid.into())),
        ("pid", Json::Int(std::process::id().into())),
        ("ppid", Json::Int(ppid.into())),
        ("uname", uname_info(&mut errors)),
        ("env", Json::Obj(env)),
        ("env_order", Json::strings(env_order)),
        ("root", dir_entries("/", "root", &mut errors)),
        ("paths", Json::Obj(run.paths)),
        ("lists", Json::Obj(run.lists)),
        ("writable", Json::Obj(run.writable)),
        ("writes", Json::Obj(run.writes)),
        ("removed", Json::Obj(run.removed)),
        ("mountinfo", mountinfo(&mut errors)),
        ("pids", pids.clone()),
        ("processes", processes(&pids)),
        ("namespaces", namespaces(&mut errors)),
        ("boot_id", boot_id(&mut errors)),
        (
            "clock",
            Json::Obj(vec![
                ("start_ms".to_string(), Json::Int(started_ms)),
                ("end_ms".to_string(), Json::Int(ended_ms)),
            ]),
        ),
        ("interfaces", interfaces(&mut errors)),
        ("unknown_directives", Json::strings(run.unknown)),
    ];
    report.push(("errors", Json::strings(errors)));

    if !run.quiet {
        let mut text = String::new();
        Json::Obj(report.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).write(&mut text);
        text.push('\n');
        let mut stdout = io::stdout().lock();
        // A closed stdout leaves nobody to tell; the exit status still counts.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
    std::process::exit(run.exit_status);
}
