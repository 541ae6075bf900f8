/**
 * The remote half of transfers that SFTP alone cannot do: short commands and their results,
 * commands whose output is the data (`cat`, `tar -c`), and the shell scripts that put content in
 * place as another user (sudo) or unpack a tree, each in one round trip.
 *
 * Every path reaches the shell as a quoted positional argument (`sh -c '<script>' sh <args>`),
 * so the scripts themselves are constant text and no name can change what they do.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Pull from "effect/Pull"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as path from "node:path"
import type { ConnectionError } from "../../Errors.ts"
import type { Settings } from "../../Settings.ts"
import type { Connection } from "../../Ssh.ts"
import { join, quote } from "../command/shell.ts"
import { kindWords } from "./io.ts"

/** How a command ended, with its standard error (and output, unless streamed elsewhere). */
export interface Finished {
  readonly exitCode: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
}

// A transfer's own commands (make a directory, move into place, clean up) are spans of the
// transfer. Their lines are scripts of ours, not what the user wrote: only the host is named.
const commandSpan = (connection: Connection) =>
  Effect.withSpan("Transfer.command", { attributes: { host: connection.target.label } })

/**
 * Runs `line` on a channel of its own (no pty, so standard error stays apart and bytes pass
 * untouched), writes `input` to it and closes its input, and hands each piece of standard
 * output to `onStdout` (or keeps it as text when none is given).
 */
export const runCommand = <E = never>(
  connection: Connection,
  line: string,
  options: {
    readonly input?: string | undefined
    readonly onStdout?: ((bytes: Uint8Array) => Effect.Effect<void, E>) | undefined
    readonly reserved?: boolean | undefined
  } = {}
): Effect.Effect<Finished, ConnectionError | E> =>
  Effect.scoped(Effect.gen(function*() {
    // Transfers run their commands while holding an SFTP session: a slot of their own keeps
    // several transfers from each holding one slot and waiting forever for a second.
    const channel = yield* connection.exec(line, {
      pty: false,
      reserved: options.reserved,
      alongside: options.reserved !== true
    })
    if (options.input !== undefined) yield* channel.write(options.input)
    yield* channel.endInput
    let stdout = ""
    let stderr = ""
    // A decoder per stream: a character split across chunks must not meet another stream's bytes.
    const outDecoder = new TextDecoder("utf-8", { ignoreBOM: true })
    const errDecoder = new TextDecoder("utf-8", { ignoreBOM: true })
    yield* Stream.runForEach(channel.output, (chunk): Effect.Effect<void, E> => {
      if (chunk._tag === "Stderr") stderr += errDecoder.decode(chunk.data, { stream: true })
      else if (options.onStdout !== undefined) return options.onStdout(chunk.data)
      else stdout += outDecoder.decode(chunk.data, { stream: true })
      return Effect.void
    })
    const { exitCode, signal } = yield* channel.exit
    yield* Effect.annotateCurrentSpan(signal !== null ? { signal } : { exitCode })
    return { exitCode, signal, stdout, stderr }
  })).pipe(commandSpan(connection))

/** How long a script may take to move its result into place once told to (a rename or two). */
const moveBound = Duration.seconds(10)

/**
 * Runs a script built by {@link feedThroughSudo} around {@link putFileScript} or
 * {@link putTreeScript}, in three steps:
 *
 * 1. Until the script says `ready` (its result complete beside the target) or ends, this can be
 *    interrupted; the channel then closes, the script reads the end of its input instead of
 *    `go`, and gives up: the target is left as it was.
 * 2. Once `ready`, `go` is sent and the move is awaited (`moved`, or the end of the script)
 *    without letting an interruption cut in, for at most {@link moveBound}: an interruption
 *    takes effect when the target has been replaced, never before a replacement still to come.
 * 3. Then the rest (the script's cleanup) can be interrupted again.
 *
 * `moved` says whether the script reported the move; `finished` is its end (stdout as text).
 */
export const runPlacing = (
  connection: Connection,
  line: string,
  input: string | undefined
): Effect.Effect<Finished & { readonly moved: boolean }, ConnectionError> =>
  Effect.scoped(Effect.gen(function*() {
    const channel = yield* connection.exec(line, { pty: false, alongside: true })
    if (input !== undefined) yield* channel.write(input)
    let stdout = ""
    let stderr = ""
    const output = yield* Stream.toPull(channel.output)
    let ended = false
    let inputEnded = false
    const outDecoder = new TextDecoder("utf-8", { ignoreBOM: true })
    const errDecoder = new TextDecoder("utf-8", { ignoreBOM: true })
    const endInput = Effect.suspend(() => {
      if (inputEnded) return Effect.void
      inputEnded = true
      return channel.endInput
    })
    /** Takes events until `until` matches stdout (never, when absent), or the channel closes. */
    const takeUntil = (until?: RegExp) =>
      Effect.gen(function*() {
        while (!ended && until?.test(stdout) !== true) {
          const chunks = yield* Pull.catchDone(output, () => Effect.succeed(undefined))
          if (chunks === undefined) ended = true
          for (const chunk of chunks ?? []) {
            if (chunk._tag === "Stderr") stderr += errDecoder.decode(chunk.data, { stream: true })
            else stdout += outDecoder.decode(chunk.data, { stream: true })
          }
          // The script (or sudo) ended: the feeding side may still wait for input.
          if (/^tb-end /m.test(stdout)) yield* endInput
        }
      })
    yield* takeUntil(/^(ready|tb-end .*)$/m)
    let moved = false
    if (!ended && /^ready$/m.test(stdout)) {
      // A fiber of its own, so that the time limit can stop it while this one waits for it
      // without letting an interruption in.
      const move = Effect.gen(function*() {
        yield* channel.write("go\n")
        yield* endInput
        yield* takeUntil(/^(moved|tb-end .*)$/m)
      }).pipe(Effect.timeoutOption(moveBound), Effect.interruptible)
      yield* Effect.uninterruptible(Effect.flatMap(Effect.forkDetach(move), Fiber.join))
      moved = /^moved$/m.test(stdout)
    }
    yield* endInput
    yield* takeUntil()
    const closed = yield* channel.exit
    yield* Effect.annotateCurrentSpan(
      closed.signal !== null ? { signal: closed.signal } : { exitCode: closed.exitCode }
    )
    return {
      exitCode: closed.exitCode,
      signal: closed.signal,
      stdout,
      stderr,
      moved
    }
  })).pipe(commandSpan(connection))

/**
 * Runs a command on the connection of the current settings, in a fresh scope: for cleanups that
 * must work even after the connection they belonged to dropped (a new one is opened then).
 */
export type Reconnect = () => Effect.Effect<Connection, unknown, Scope.Scope>

// -- sudo -----------------------------------------------------------------------------------------

/**
 * How the password reaches sudo, and only sudo. The login user's shell reads the password line
 * that the caller writes first, and offers it on a FIFO in a private directory of its own; sudo
 * asks for it, if it needs it at all, through `cat` of that FIFO as its askpass program (`-A`, the
 * FIFO's path as the prompt that sudo hands to it), run as the login user. So the password never
 * sits in the input of the command sudo starts: a command run as `sudoUser` could otherwise read
 * it from its own input, or any process of that user from `/proc/<pid>/fd/0`, whenever sudo did
 * not prompt. Once read, the FIFO is replaced by an empty file, so that sudo, refused, gets no
 * second try and gives up at once. The directory is removed when sudo ends.
 */
const askpassWrapper = `IFS= read -r tbpw || exit 1; d=$(mktemp -d /tmp/tb-sudo.XXXXXXXX) || exit 1; ` +
  `mkfifo -m 600 "$d/pw" || { rm -rf -- "$d"; exit 1; }; ` +
  `{ printf '%s\\n' "$tbpw" >"$d/pw"; rm -f -- "$d/pw"; : >"$d/pw"; } & w=$!; tbpw=; ` +
  `SUDO_ASKPASS=$(command -v cat) sudo -A -p "$d/pw" "$@"; s=$?; kill $w 2>/dev/null; rm -rf -- "$d"; exit $s`

/**
 * The `sudo` words for the settings: non-interactive without a password; with one, a wrapper
 * that reads the password line the caller writes first and hands it to sudo alone (see
 * {@link askpassWrapper}).
 */
export const sudoPrefix = (settings: Settings): string => {
  const options = [...(settings.sudoUser === undefined ? [] : ["-u", settings.sudoUser]), "--"]
  return join(
    settings.sudoPassword === undefined
      ? ["sudo", "-n", ...options]
      : ["/bin/sh", "-c", askpassWrapper, "sh", ...options]
  )
}

/** The password line to write to a sudo command's input, if any. */
export const sudoInput = (settings: Settings): string | undefined =>
  settings.sudoPassword === undefined ? undefined : `${Redacted.value(settings.sudoPassword)}\n`

/** `sh -c '<script>' sh <args...>`, optionally through sudo. */
export const shellLine = (script: string, args: ReadonlyArray<string>, sudo: string | undefined): string =>
  [sudo ?? "", "/bin/sh -c", quote(script), "sh", join(args)].filter((s) => s !== "").join(" ")

/**
 * The line that feeds `$stage/data`, staged by the connecting user in a private directory, to a
 * script that runs as the sudo target, who may not be able to open it: the connecting user's
 * shell reads it and pipes it in, then removes the staging directory. A marker line goes first,
 * so that the script can tell the content from a password line sudo did not need (and so left
 * on its input).
 *
 * After the content, the rest of the channel's input follows it into the script: the `go` line
 * that lets the script move its result into place ({@link awaitGo}), or the end of input
 * when the transfer is interrupted, which makes it give up. When the script (or sudo) ends,
 * `tb-end <status>` is printed, so that the caller knows to close the input that the feeding
 * side may still be waiting on.
 */
export const feedThroughSudo = (
  settings: Settings,
  stage: string,
  marker: string,
  script: string,
  args: ReadonlyArray<string>
): string => {
  const password = !settings.useSudo || settings.sudoPassword === undefined
    ? ""
    : `IFS= read -r tbpw && printf '%s\\n' "$tbpw" ${"'' ".repeat(passwordTries)}&& `
  const inner = shellLine(
    `${skipToMarker(marker)}\n${script}`,
    args,
    settings.useSudo ? sudoPrefix(settings) : undefined
  )
  const outer =
    `{ ${password}printf '%s\\n' ${quote(marker)} && cat -- ${
      quote(`${stage}/data`)
    } && exec cat; } | { ${inner}\n` +
    `status=$?; echo "tb-end $status"; exit $status; }\n` +
    `status=$?; rm -rf -- ${quote(stage)}; exit $status`
  return shellLine(outer, [], undefined)
}

/**
 * Empty lines after the password: a sudo that refuses the password reads its next tries from the
 * same input (`passwd_tries`, 3 by default), and must find them there rather than wait for the
 * rest of the input, which follows only once the script says it is ready. The script skips them
 * like the password line, up to the marker.
 */
const passwordTries = 10

const skipToMarker = (marker: string): string =>
  `while IFS= read -r tbline; do [ "$tbline" = ${quote(marker)} ] && break; done`

/**
 * The part of a temporary name taken from the file it stands for: the name itself, or nothing
 * when a suffix could take it past NAME_MAX (255 bytes). The scripts below do the same.
 */
export const tempBase = (name: string): string => Buffer.byteLength(name) > 200 ? "" : name

/** The temporary name beside `target` that the scripts below use for transfer `id`. */
export const tempBeside = (target: string, id: string): string => {
  const slash = target.lastIndexOf("/")
  const dir = slash === -1 ? "." : slash === 0 ? "/" : target.slice(0, slash)
  return `${dir === "/" ? "" : dir}/.${tempBase(target.slice(slash + 1))}.tb-${id}.part`
}

/** Reasons a script reports on standard error as `tb:<reason> <detail>`. */
export const scriptFailure = (
  stderr: string
): { readonly reason: string; readonly detail: string } | undefined => {
  const match = /^tb:([a-z-]+) ?(.*)$/m.exec(stderr)
  return match === null ? undefined : { reason: match[1]!, detail: match[2] ?? "" }
}

// Shared start of both scripts: an existing directory receives the upload under its local name
// (printing `into`, so the caller knows where it went); then the parent is made, the target
// checked, and the temporary name beside it chosen (as {@link tempBeside} does).
const placeTarget = `set -e
target=$1 name=$2 id=$3 owner=$4 overwrite=$5
if [ -n "$name" ] && [ -d "$target" ]; then target=\${target%/}/$name; echo into; fi
case $target in */*) dir=\${target%/*}; [ -n "$dir" ] || dir=/ ;; *) dir=. ;; esac
base=\${target##*/}; [ "$(printf %s "$base" | wc -c)" -gt 200 ] && base=
tmp=\${dir%/}/.$base.tb-$id.part
mkdir -p -- "$dir" 2>/dev/null || {
  p=$dir
  while :; do
    if { [ -e "$p" ] || [ -L "$p" ]; } && [ ! -d "$p" ]; then
      echo "tb:not-a-directory $p is not a directory (it is a file), so the remote directory $dir cannot be created in it; remove or rename it, or choose another target" >&2; exit 3
    fi
    case $p in */*) p=\${p%/*}; [ -n "$p" ] || break ;; *) break ;; esac
  done
  echo "tb:permission cannot create directory $dir" >&2; exit 3; }
`

/**
 * `tb_take N`: copies exactly N bytes of standard input to standard output, never reading past
 * them. GNU `dd` does it in 1 MiB blocks; `head -c`, where `dd` is not GNU's, in GNU head's 8 KiB
 * reads and 4 KiB writes, which made the copy of a 256 MiB sudo upload ~0.45 s instead of ~0.35 s
 * (and `dd`'s is ~0.3 s, about what `cat` takes).
 */
const takeBytes = `tb_take() {
  if dd --version >/dev/null 2>&1; then dd bs=1048576 count="$1" iflag=count_bytes,fullblock 2>/dev/null
  else head -c "$1"; fi
}
`

/**
 * The step between a result ready beside the target and its move into place: the script says
 * `ready` and reads one more line of its input. Only `go` lets it go on; the end of input (the
 * transfer was interrupted and its channel closed) makes it give up, removing what it made. So
 * an interrupted transfer never replaces its target after it returned: the caller sends `go`
 * only in a step it does not let an interruption cut ({@link runPlacing}). A closed output (the
 * `ready` cannot be written) or a signal ends the script through its EXIT trap too, which
 * removes what it made; a shell killed by a signal it does not trap would skip it. The content before
 * it is read by its exact size ({@link takeBytes}), so the `go` line is never taken for content.
 */
const awaitGo = `echo ready
IFS= read -r tbgo || tbgo=
[ "$tbgo" = go ] || { echo "tb:interrupted the transfer was interrupted before its move into place" >&2; exit 4; }`

/**
 * Puts standard input in place as the running user: a file in a new private directory beside
 * the target (`mkdir` fails on anything already there, so a name planted by someone who can
 * write in the target's directory is never followed), its size checked, mode and owner set,
 * then, once told to ({@link awaitGo}), renamed over the target, so that the target is either
 * the old file or the whole new one. Arguments: target, local name (or empty), transfer id, owner
 * (or empty), overwrite (1/0), size, mode (octal, or empty: keep the old file's, else 644).
 */
export const putFileScript = `${placeTarget}${takeBytes}size=$6 mode=$7
if [ -d "$target" ]; then echo "tb:is-directory the target is a directory; name the file to write" >&2; exit 3; fi
if [ "$overwrite" = 0 ] && { [ -e "$target" ] || [ -L "$target" ]; }; then echo "tb:exists the target exists and overwrite is off" >&2; exit 3; fi
mkdir -m 700 -- "$tmp" 2>/dev/null || { echo "tb:permission cannot write in $dir" >&2; exit 3; }
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 5' HUP INT TERM PIPE
( umask 077; tb_take "$size" > "$tmp/f" ) 2>/dev/null || { echo "tb:permission cannot write in $dir" >&2; exit 3; }
got=$(wc -c < "$tmp/f")
if [ "$got" -ne "$size" ]; then echo "tb:verify received $got bytes of $size" >&2; exit 3; fi
if [ -n "$mode" ]; then chmod "$mode" "$tmp/f"
elif [ -e "$target" ]; then chmod "$(stat -L -c %a -- "$target")" "$tmp/f"
else chmod 644 "$tmp/f"; fi
if [ -n "$owner" ]; then chown -- "$owner" "$tmp/f"
elif [ -e "$target" ] && [ "$(id -u)" = 0 ]; then chown "$(stat -L -c %u:%g -- "$target")" "$tmp/f"; fi
${awaitGo}
mv -f -- "$tmp/f" "$target"
echo moved`

/**
 * `rm -rf` of the paths given, that also removes a tree holding read-only directories (a
 * release unpacked with its `0555` modes, an old tree moved aside): the user who made them may
 * remove their entries only once they are writable again. Symbolic links are never followed:
 * `chmod -R` does not follow those it meets, and one named here is removed as it is.
 */
export const removeTreesScript = `rm -rf -- "$@" 2>/dev/null && exit 0
for p in "$@"; do [ -L "$p" ] || [ ! -d "$p" ] || chmod -R u+w -- "$p" 2>/dev/null; done
exec rm -rf -- "$@"`

/**
 * Unpacks a tar stream from standard input (our own archive, whose root is `t`) into a private
 * directory beside the target, then, once told to ({@link awaitGo}), moves it into place,
 * replacing an old tree of that name. Arguments: target, local name, transfer id, owner (or
 * empty), overwrite (1/0), size of the archive.
 *
 * Modes are kept, read-only directories included: a user who is not root may move a directory to
 * another parent only when it can write in it (its `..` changes), so a tree whose top is
 * read-only (and an old one being replaced) gets `u+w` for its move and its mode back after it.
 * Root needs none of that.
 */
export const putTreeScript = `${placeTarget}${takeBytes}size=$6
if { [ -e "$target" ] || [ -L "$target" ]; } && [ ! -d "$target" ]; then echo "tb:is-directory the target exists and is not a directory" >&2; exit 3; fi
if [ "$overwrite" = 0 ] && [ -e "$target" ]; then echo "tb:exists the target exists and overwrite is off" >&2; exit 3; fi
mkdir -m 700 -- "$tmp" 2>/dev/null || { echo "tb:permission cannot write in $dir" >&2; exit 3; }
trap 'rm -rf -- "$tmp" 2>/dev/null || { chmod -R u+w -- "$tmp"; rm -rf -- "$tmp"; }' EXIT
trap 'exit 5' HUP INT TERM PIPE
tb_take "$size" | tar -x -f - -C "$tmp" --no-same-owner -p
if [ -n "$owner" ]; then chown -R -- "$owner" "$tmp/t"; fi
newmode= oldmode=
if [ ! -w "$tmp/t" ]; then newmode=$(stat -c %a -- "$tmp/t"); chmod u+w -- "$tmp/t"; fi
${awaitGo}
if [ -e "$target" ]; then
  if [ ! -L "$target" ] && [ ! -w "$target" ]; then oldmode=$(stat -c %a -- "$target"); chmod u+w -- "$target" || oldmode=; fi
  mv -- "$target" "$tmp/old" || { [ -z "$oldmode" ] || chmod -- "$oldmode" "$target"; exit 1; }
fi
if ! mv -- "$tmp/t" "$target"; then
  if [ -e "$tmp/old" ] || [ -L "$tmp/old" ]; then mv -- "$tmp/old" "$target" && { [ -z "$oldmode" ] || chmod -- "$oldmode" "$target"; }; fi
  exit 1
fi
if [ -n "$newmode" ]; then chmod -- "$newmode" "$target" || :; fi
echo moved`

/**
 * Describes `$1` for a download: `d` for a directory, `f <size> <mode>` for a readable file,
 * `n` for nothing there, `r` for a file the user cannot read, `o <type>` for anything else (a
 * FIFO, a device, a socket), which is not read.
 */
export const probeScript = `if [ -d "$1" ]; then echo d
elif [ ! -e "$1" ]; then echo n
elif [ ! -f "$1" ]; then echo "o $(stat -L -c %F -- "$1")"
elif [ ! -r "$1" ]; then echo r
else stat -L -c 'f %s %a' -- "$1"; fi`

// `stat -c %F` words, as the messages of local files say them.
const otherKind = (type: string): string =>
  type === "fifo"
    ? kindWords.fifo
    : type === "socket"
    ? kindWords.socket
    : /block/.test(type)
    ? kindWords.block
    : /character/.test(type)
    ? kindWords.character
    : `a ${type}`

/** Parses {@link probeScript}'s answer. */
export const parseProbe = (
  stdout: string
):
  | { readonly _tag: "Directory" }
  | { readonly _tag: "File"; readonly size: number; readonly mode: number }
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Unreadable" }
  | { readonly _tag: "Other"; readonly kind: string }
  | undefined =>
{
  const line = stdout.trim()
  if (line.startsWith("o ")) return { _tag: "Other", kind: otherKind(line.slice(2)) }
  if (line === "d") return { _tag: "Directory" }
  if (line === "n") return { _tag: "Missing" }
  if (line === "r") return { _tag: "Unreadable" }
  const match = /^f (\d+) ([0-7]+)$/.exec(line)
  return match === null
    ? undefined
    : { _tag: "File", size: Number(match[1]), mode: Number.parseInt(match[2]!, 8) }
}

/**
 * `tar -c` of a directory's contents (`./...`) to standard output. `tar` stores a FIFO or a
 * device as a header alone, never opening it (the reader reports it as skipped), but drops a
 * socket with a mere "socket ignored" (in the server's language): so the sockets of the tree are
 * listed first, on standard error, between markers ({@link skippedSockets}). `find` only looks
 * at entries, it opens none.
 */
export const tarCreateLine = (dir: string, sudo: string | undefined): string =>
  shellLine(
    `cd -- "$1" || exit
{ printf '${socketsStart}\\0'; find . -type s -print0 2>/dev/null; printf '${socketsEnd}\\n'; } >&2
exec tar -c -f - .`,
    [dir],
    sudo
  )

const socketsStart = "tb-sockets"
const socketsEnd = "tb-sockets-end"
// Every name `find .` prints starts with `./` and ends with a NUL, which no name holds: a name
// (newlines and all) can never pass for the end marker.
const socketList = new RegExp(`${socketsStart}\\0((?:\\./[^\\0]*\\0)*)${socketsEnd}\\n`)

/**
 * The sockets a {@link tarCreateLine} listed, as names in the tree (`sub/app.sock`; bytes that
 * are not UTF-8 show as U+FFFD), and its standard error without that list.
 */
export const skippedSockets = (
  stderr: string
): { readonly sockets: ReadonlyArray<string>; readonly stderr: string } => {
  const match = socketList.exec(stderr)
  if (match === null) return { sockets: [], stderr }
  const sockets = match[1]!.split("\0").filter((name) => name !== "").map((name) => name.slice(2))
  return { sockets, stderr: stderr.slice(0, match.index) + stderr.slice(match.index + match[0].length) }
}

/** `cat` of a file to standard output. */
export const catLine = (file: string, sudo: string | undefined): string =>
  shellLine(`exec cat -- "$1"`, [file], sudo)

/**
 * A remote path as SFTP and the shell both read it: `~/x` becomes `x` (both start in the home
 * directory), and a relative path is taken from `remoteWorkingDir` (`rcd`) when set.
 */
export const remotePath = (settings: Settings, p: string): string => {
  // `~//x` is `x` in the home directory, never the absolute `/x`.
  const strip = (q: string): string =>
    q === "~" ? "." : q.startsWith("~/") ? q.slice(2).replace(/^\/+/, "") || "." : q
  const own = strip(p)
  if (path.posix.isAbsolute(own) || settings.remoteWorkingDir === undefined) return own
  return path.posix.join(strip(settings.remoteWorkingDir), own)
}
