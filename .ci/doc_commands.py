#!/usr/bin/env python3
"""Runs every command shown in README.md, ARCHITECTURE.md and docs/*.md, so the docs
cannot rot.

    .ci/doc_commands.py path/to/call-outcome [FILE.md ...]

What it runs, per Markdown file, in one bash process (`set -euo pipefail`), in order:
- every fenced block tagged `sh`, as written;
- every `$ ` line of a block tagged `console`; the lines after it up to the next `$ `
  line are the expected output, compared exactly.

What it changes, and only that:
- `call-outcome` is a shell function calling the binary under test (it wins over PATH,
  so a stale binary elsewhere is never used), and the first `call-outcome` on PATH;
- the documented default ports (50051, 50052, 9090, 9091, 4222, 8080) become free ports picked
  for the file, in the commands and through CALL_OUTCOME_LISTEN, _ADMIN_LISTEN,
  _SERVER_URL and _NATS_URL, so the docs run beside a service on the real defaults;
- after a command put in the background with `&` that starts a server (`serve`,
  `nats-server`), it waits until that server accepts connections;
- a file holding `<!-- docs-test: server ... -->` gets `call-outcome serve` running (the
  README's run command) before its blocks, stopped with SIGTERM after them, which must
  exit 0.

A block right after `<!-- docs-test: skip: REASON -->` is not run; the reason is printed.
Each file has 240 s. Exit status 0 when every block passed.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = ["50051", "50052", "9090", "9091", "4222", "8080"]
FILE_TIMEOUT = 240
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w[\w-]*)\s*:?(.*?)-->", re.S)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blocks(text):
    """(line number, info string, body, directive before it) for each fenced block."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        info, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        # A directive is an HTML comment ending on the line right before the fence.
        before = "\n".join(lines[max(0, start - 6):start])
        directive = None
        if before.rstrip().endswith("-->"):
            found = list(DIRECTIVE.finditer(before))
            if found:
                directive = (found[-1].group(1), " ".join(found[-1].group(2).split()))
        out.append((start + 1, info, "\n".join(lines[start + 1:j]), directive))
        i = j + 1
    return out


def logical_lines(body):
    """Lines with backslash continuations joined, keeping the original text."""
    out, current = [], ""
    for line in body.split("\n"):
        current += line + "\n"
        if not line.rstrip().endswith("\\"):
            out.append(current.rstrip("\n"))
            current = ""
    if current:
        out.append(current.rstrip("\n"))
    return out


def server_port(command, ports):
    """The port a backgrounded server command will listen on, or None."""
    words = command.replace("\\\n", " ")
    if re.search(r"(^|\s)nats-server\s", words):
        m = re.search(r"-p\s+(\d+)", words)
        return int(m.group(1)) if m else 4222
    if re.search(r"(^|\s)call-outcome\s+serve(\s|$)", words):
        m = re.search(r"--listen\s+127\.0\.0\.1:(\d+)", words)
        return int(m.group(1)) if m else ports["50051"]
    return None


def script_for(path, text, ports, skipped):
    parts = [
        "set -euo pipefail",
        f"cd {shlex.quote(str(REPO))}",
        'call-outcome() { "$CO_BIN" "$@"; }',
        "export -f call-outcome",
        # Waits (bounded) until a backgrounded server accepts connections.
        "__wait_port() { for _ in $(seq 1 300); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; "
        "sleep 0.1; done; echo \"docs: nothing listens on port $1\" >&2; return 1; }",
    ]
    count = 0
    for line_no, info, body, directive in blocks(text):
        if info not in ("sh", "console"):
            continue
        where = f"{path}:{line_no}"
        if directive and directive[0] == "skip":
            skipped.append(f"{where}: {directive[1] or '(no reason given)'}")
            continue
        count += 1
        body = re.sub(
            r"(?<![0-9])(" + "|".join(DEFAULT_PORTS) + r")(?![0-9])",
            lambda m: str(ports[m.group(1)]),
            body,
        )
        parts.append(f"echo '--- {where}' >&2")
        if info == "sh":
            for command in logical_lines(body):
                parts.append(command)
                bare = re.sub(r"\s+#.*$", "", command.rstrip())
                if bare.endswith("&"):
                    port = server_port(bare, ports)
                    if port:
                        parts.append(f"__wait_port {port}")
        else:
            current, expected = None, []

            def flush():
                if current is None:
                    return
                marker = "__EXPECTED_OUTPUT__"
                parts.append(f"__out=$({current})")
                parts.append(
                    f"diff -u <(cat <<'{marker}'\n" + "\n".join(expected) + f"\n{marker}\n) "
                    '<(printf "%s\\n" "$__out") >&2 || { echo "docs: output differs from '
                    + where + '" >&2; exit 1; }'
                )

            for line in body.split("\n"):
                if line.startswith("$ "):
                    flush()
                    current, expected = line[2:], []
                else:
                    expected.append(line)
            flush()
    return "\n".join(parts) + "\n", count


def stop_group(pgid):
    """SIGTERM to a process group, then SIGKILL to what is left after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def start_server(binary, env, log):
    process = subprocess.Popen(
        [binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit("docs: `call-outcome serve` exited early")
        log.flush()
        if "serving calloutcome" in Path(log.name).read_text(errors="replace"):
            return process
        time.sleep(0.05)
    process.kill()
    raise SystemExit("docs: `call-outcome serve` did not start within 30 s")


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    binary = str(Path(sys.argv[1]).resolve())
    files = sys.argv[2:] or ["README.md", "ARCHITECTURE.md"] + sorted(
        str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")
    )
    skipped, ran, failed = [], 0, []
    # `call-outcome` as a program too, for commands run by others (`timeout`, `xargs`).
    bindir = Path(tempfile.mkdtemp(prefix="docs-bin-"))
    (bindir / "call-outcome").symlink_to(binary)
    for name in files:
        text = (REPO / name).read_text()
        ports = {p: free_port() for p in DEFAULT_PORTS}
        script, count = script_for(name, text, ports, skipped)
        if count == 0:
            continue
        env = dict(os.environ)
        env.update(
            CO_BIN=binary,
            PATH=f"{bindir}:{REPO / '.tools' / 'bin'}:{env.get('PATH', '')}",
            CALL_OUTCOME_LISTEN=f"127.0.0.1:{ports['50051']}",
            CALL_OUTCOME_ADMIN_LISTEN=f"127.0.0.1:{ports['9090']}",
            CALL_OUTCOME_SERVER_URL=f"http://127.0.0.1:{ports['50051']}",
            CALL_OUTCOME_NATS_URL=f"nats://127.0.0.1:{ports['4222']}",
        )
        for key in ("CALL_OUTCOME_CONFIG", "CALL_OUTCOME_TOKEN", "CALL_OUTCOME_BACKEND"):
            env.pop(key, None)
        with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
            server = None
            if DIRECTIVE.search(text) and any(
                m.group(1) == "server" for m in DIRECTIVE.finditer(text)
            ):
                server = start_server(binary, env, log)
            # Output to a file, not a pipe: a server a block left in the background
            # must not keep the runner waiting for the pipe to close.
            with tempfile.TemporaryFile("w+") as out:
                process = subprocess.Popen(
                    ["bash", "-c", script],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    ok = process.wait(timeout=FILE_TIMEOUT) == 0
                    timed_out = ""
                except subprocess.TimeoutExpired:
                    ok, timed_out = False, f"timed out after {FILE_TIMEOUT} s\n"
                # Whatever the blocks left running (servers, subscribers) goes with
                # their process group.
                stop_group(process.pid)
                out.seek(0)
                output = timed_out + out.read()
            if server is not None:
                server.send_signal(signal.SIGTERM)
                try:
                    code = server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    code = "killed after 30 s"
                if code != 0:
                    ok = False
                    output += f"\n`call-outcome serve` ended with {code} after SIGTERM\n"
                    output += Path(log.name).read_text(errors="replace")[-3000:]
        ran += count
        if ok:
            print(f"ok - {name}: {count} blocks")
        else:
            failed.append(name)
            print(f"FAIL - {name}\n{output[-6000:]}")
    for line in skipped:
        print(f"skipped - {line}")
    print(f"docs: {ran} blocks run in {len(files)} files, {len(skipped)} skipped, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
