/**
 * The machinery of `Transfer.download`: where the copy goes (memory or a local path), what is at
 * the remote path, and fetching a file (pipelined SFTP reads, or `sudo cat`) or a tree (`tar`)
 * into a local temporary name that is renamed into place.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as path from "node:path"
import { TransferError } from "../../Errors.ts"
import * as Output from "../../Output.ts"
import { resolveLocal, Settings } from "../../Settings.ts"
import { type SftpSession, SshConnections } from "../../Ssh.ts"
import * as Io from "./io.ts"
import { hostOf, type Job, nonce, remotePlace, whileConnected } from "./job.ts"
import * as LocalFiles from "./localFiles.ts"
import type { DownloadOptions } from "./options.ts"
import * as Progress from "./progress.ts"
import * as Remote from "./remote.ts"
import { readPipeline } from "./sftpFile.ts"
import * as Tree from "./tree.ts"

/** The blocks a streamed download (`cat`) is written in. */
const streamBlock = 1024 * 1024

/** Where a download goes: memory, or a local path (already joined with the remote name). */
export type Destination =
  | { readonly _tag: "Memory" }
  | { readonly _tag: "Local"; readonly path: string; readonly existing: LocalFiles.LocalStats | undefined }

/**
 * The name a remote path gives its copy inside a local directory: its last component once `.`
 * and `..` are resolved by name (`/srv/app/.` and `/srv/app/inner/..` are `app`), or `undefined`
 * when it has none (`.`, `..`, the home directory `~`, the root `/`), so that no path ever names the local
 * directory itself, or one of its parents, as the copy to replace.
 */
export const remoteName = (remotePath: string): string | undefined => {
  const name = path.posix.basename(path.posix.normalize(remotePath.replace(/\/+$/, "")))
  return name === "" || name === "." || name === ".." ? undefined : name
}

export const resolveDestination = Effect.fnUntraced(function*(
  settings: Settings,
  label: string,
  target: string | undefined,
  remotePath: string
) {
  if (target === undefined) return { _tag: "Memory" } as Destination
  let local = resolveLocal(settings, target)
  let existing = yield* LocalFiles.localStat({ host: label, side: "local", path: local })
  if (existing?.isDirectory() === true || target.endsWith("/")) {
    // Named after the path as it is read (`~` is the home directory, relative to `rcd`).
    const name = remoteName(Remote.remotePath(settings, remotePath))
    if (name === undefined) {
      return yield* Io.transferError(
        { host: label, side: "remote", path: remotePath },
        "not-found",
        `it has no name of its own for its copy in the local directory ${local}; name the remote ` +
          `directory (not "." or "..") or give the whole local path to write (${path.join(local, "copy")})`
      )
    }
    local = path.join(local, name)
    existing = yield* LocalFiles.localStat({ host: label, side: "local", path: local })
  }
  return { _tag: "Local", path: local, existing } as Destination
})

/** A local temporary file beside `file`, removed unless `keep` was called. */
export const localTemp = Effect.fnUntraced(function*(place: Io.Place, file: string) {
  const dir = path.dirname(file)
  yield* LocalFiles.localMkdirs(place, dir)
  const temp = path.join(dir, `.${Remote.tempBase(path.basename(file))}.tb-${yield* nonce}.part`)
  const opened = yield* LocalFiles.tempFile(place, temp, file)
  return {
    fd: opened.fd,
    temp,
    /** Checks the size, sets the mode and renames over `file`. */
    place: opened.place
  }
})

export const checkLocalTarget = (
  place: Io.Place,
  settings: Settings,
  existing: LocalFiles.LocalStats | undefined
) =>
  existing === undefined
    ? Effect.void
    : existing.isDirectory()
    ? Effect.fail(Io.transferError(place, "is-directory", "a local directory is in the way of the file"))
    : !settings.overwrite
    ? Effect.fail(
      Io.transferError(place, "exists", "the local file exists and overwrite is off")
    )
    : Effect.void

/** What is at a remote path, found over SFTP, or through sudo when the user may not look. */
export type RemoteKind =
  | { readonly _tag: "Directory" }
  | { readonly _tag: "File"; readonly size: number; readonly mode: number }

export const probeRemote = Effect.fnUntraced(function*(ctx: Job, sftp: SftpSession, target: string) {
  const place = remotePlace(ctx)
  if (!ctx.settings.useSudo) {
    const info = yield* Io.remoteStat(sftp, { ...place, path: target })
    if (info === undefined) {
      return yield* Io.transferError(place, "not-found", "no such remote file or directory")
    }
    if (info.isDirectory()) return { _tag: "Directory" } as RemoteKind
    // Reading a FIFO would wait for a writer inside the server's SFTP process, for ever.
    if (!info.isFile()) return yield* Io.notRegular(place, Io.kindOf(info))
    return { _tag: "File", size: info.size, mode: info.mode & 0o7777 } as RemoteKind
  }
  const done = yield* Remote.runCommand(
    ctx.connection,
    Remote.shellLine(Remote.probeScript, [target], Remote.sudoPrefix(ctx.settings)),
    { input: Remote.sudoInput(ctx.settings) }
  )
  const found = Remote.parseProbe(done.stdout)
  if (found === undefined) {
    return yield* Io.transferError(place, "permission", `sudo refused to look at it: ${done.stderr.trim()}`)
  }
  if (found._tag === "Missing") {
    return yield* Io.transferError(place, "not-found", "no such remote file or directory")
  }
  if (found._tag === "Other") return yield* Io.notRegular(place, found.kind)
  if (found._tag === "Unreadable") {
    return yield* Io.transferError(place, "permission", `${ctx.settings.sudoUser ?? "root"} cannot read it`)
  }
  return found as RemoteKind
})

/** Streams a remote command's output (`cat`, `tar -c`) to `sink`; fails unless it exits 0. */
export const streamRemote = Effect.fnUntraced(function*(
  ctx: Job,
  line: string,
  sink: (bytes: Uint8Array) => Effect.Effect<void, TransferError>
) {
  const input = ctx.settings.useSudo ? Remote.sudoInput(ctx.settings) : undefined
  const done = yield* Remote.runCommand(ctx.connection, line, { input, onStdout: sink })
  const { sockets, stderr: rest } = Remote.skippedSockets(done.stderr)
  if (done.exitCode !== 0) {
    const stderr = rest.trim()
    return yield* Io.transferError(
      remotePlace(ctx),
      /denied|not permitted|password/i.test(stderr)
        ? "permission"
        : /No such/i.test(stderr)
        ? "not-found"
        : "failed",
      stderr === "" ? `the remote command ended with ${done.exitCode ?? done.signal}` : stderr
    )
  }
  return sockets
})

/**
 * A file, to memory or to a local temporary file renamed into place. The size the server
 * reported is where the pipelined read stops; the file is then read on to its end, so that a
 * file the server gave no size (`/proc/cpuinfo`) or one that grew comes whole. With sudo, `cat`
 * streams it, and what it gives is the content.
 */
export const downloadFile = Effect.fnUntraced(function*(
  ctx: Job,
  sftp: SftpSession,
  target: string,
  kind: { readonly size: number; readonly mode: number },
  destination: Destination,
  meter: Progress.Meter
) {
  const place = remotePlace(ctx)
  const memory = destination._tag === "Memory" ? new Io.GrowableBytes(kind.size) : undefined
  let received = 0
  const local = destination._tag === "Local"
    ? yield* localTemp({ host: ctx.label, side: "local", path: destination.path }, destination.path)
    : undefined
  const localPlace: Io.Place = { host: ctx.label, side: "local", path: local?.temp ?? "" }
  const count = (n: number) => {
    meter.add(n)
    received += n
  }
  const sink = (offset: number, bytes: Uint8Array) =>
    Effect.suspend(() => {
      if (memory !== undefined) {
        memory.set(offset, bytes)
        return Effect.void
      }
      return LocalFiles.localWrite(localPlace, local!.fd, bytes, offset)
    })

  // `sudo cat` comes in packets of 32 KiB: gathered into blocks, one local write each.
  const streamed = Io.gatherer(streamBlock, sink)
  const onStream = (bytes: Uint8Array) => {
    count(bytes.length)
    return streamed.push(bytes)
  }
  if (ctx.settings.useSudo) {
    yield* streamRemote(ctx, Remote.catLine(target, Remote.sudoPrefix(ctx.settings)), onStream)
    yield* streamed.flush
  } else {
    const handle = yield* Io.openRemote(sftp, place, target, "r")
    const pipeline = readPipeline(sftp)
    yield* Io.pipelinedRead(sftp, handle, place, kind.size, pipeline, count, sink)
    const end = yield* Io.readToEnd(sftp, handle, place, kind.size, pipeline.chunkSize, count, sink)
    if (received !== end) {
      return yield* Io.transferError(place, "verify", `received ${received} bytes of ${end}`)
    }
  }
  if (memory !== undefined) return memory.bytes(received)
  const existing = destination._tag === "Local" ? destination.existing : undefined
  yield* local!.place(
    received,
    existing === undefined ? kind.mode & Tree.downloadModeMask : existing.mode & 0o7777
  )
  return (destination as { readonly path: string }).path
})

export const downloadTree = Effect.fnUntraced(function*(
  ctx: Job,
  target: string,
  destination: { readonly path: string; readonly existing: LocalFiles.LocalStats | undefined },
  meter: Progress.Meter
) {
  const localPlace: Io.Place = { host: ctx.label, side: "local", path: destination.path }
  const dir = path.dirname(destination.path)
  yield* LocalFiles.localMkdirs(localPlace, dir)
  const stage = path.join(dir, `.${Remote.tempBase(path.basename(destination.path))}.tb-${yield* nonce}`)
  yield* Effect.acquireRelease(
    LocalFiles.mkdirPrivate(localPlace, stage),
    () => Tree.removeTree(stage)
  )
  const writer = new Tree.TreeWriter(path.join(stage, "t"))
  yield* Effect.addFinalizer(() => Effect.sync(() => writer.abandon()))
  yield* Tree.treeStep(localPlace, () => writer.open())
  const sudo = ctx.settings.useSudo ? Remote.sudoPrefix(ctx.settings) : undefined
  const sockets = yield* streamRemote(ctx, Remote.tarCreateLine(target, sudo), (bytes) => {
    meter.add(bytes.length)
    return Tree.treeStep(localPlace, () => writer.push(bytes))
  })
  if (!writer.complete) {
    return yield* Io.transferError(
      localPlace,
      "verify",
      "the directory stream ended early; nothing was replaced"
    )
  }
  // Neither `tar` nor `find` opened them; what they are is said, and the tree goes without them.
  const inTree = (name: string) => remotePlace(ctx, path.posix.join(target, name))
  for (const { kind, name } of writer.skipped) yield* Io.warnSkipped(inTree(name), kind)
  for (const name of sockets) yield* Io.warnSkipped(inTree(name), Io.kindWords.socket)
  yield* Tree.treeStep(localPlace, () => writer.finish())
  // The old tree moves aside into the staging directory, which the finalizer removes; a user who
  // is not root may move a read-only directory only once it can write in it (its `..` changes).
  const old = destination.existing
  const aside = path.join(stage, "old")
  if (old !== undefined) {
    if ((old.mode & 0o200) === 0) {
      yield* LocalFiles.chmod(localPlace, destination.path, (old.mode & 0o7777) | 0o200)
    }
    yield* LocalFiles.rename(localPlace, destination.path, aside)
  }
  yield* LocalFiles.rename(localPlace, writer.root, destination.path).pipe(
    // Not in place: the old tree goes back, as it was.
    Effect.tapError(() =>
      old === undefined ? Effect.void : Effect.ignore(
        Effect.andThen(
          LocalFiles.rename(localPlace, aside, destination.path),
          LocalFiles.chmod(localPlace, destination.path, old.mode & 0o7777)
        )
      )
    )
  )
  yield* LocalFiles.chmod(localPlace, destination.path, writer.rootMode)
  return destination.path
})

export const downloadWith = Effect.fnUntraced(function*(
  remotePath: string,
  localTarget: string | undefined,
  settings: Settings,
  options: DownloadOptions
) {
  const started = yield* Clock.currentTimeMillis
  const label = yield* hostOf(settings)
  const destination = yield* resolveDestination(settings, label, localTarget, remotePath)
  const shownLocal = destination._tag === "Memory" ? "<memory>" : destination.path
  yield* Output.printRunning(label, settings.useSudo ? "sudo get" : "get", `${remotePath} -> ${shownLocal}`)
  if (settings.dryRun) return destination._tag === "Memory" ? new Uint8Array(0) : destination.path
  const ssh = yield* SshConnections
  const connection = yield* ssh.connect(settings)
  const ctx: Job = { settings, connection, label, shown: remotePath, reconnect: ssh.connect(settings) }
  const target = Remote.remotePath(settings, remotePath)
  const localPlace: Io.Place = { host: label, side: "local", path: shownLocal }

  const result = yield* whileConnected(
    ctx,
    Effect.gen(function*() {
      const sftp = yield* connection.sftp
      const kind = yield* probeRemote(ctx, sftp, target)
      if (kind._tag === "Directory") {
        if (destination._tag === "Memory") {
          return yield* Io.transferError(
            remotePlace(ctx),
            "is-directory",
            "it is a directory, which cannot be read into memory; give a local directory as the target"
          )
        }
        if (destination.existing !== undefined && !destination.existing.isDirectory()) {
          return yield* Io.transferError(
            remotePlace(ctx),
            "is-directory",
            `it is a directory, and the local target ${destination.path} is a file`
          )
        }
        if (destination.existing !== undefined && !settings.overwrite) {
          return yield* Io.transferError(
            localPlace,
            "exists",
            "the local directory exists and overwrite is off"
          )
        }
        const meter = yield* Progress.start({
          direction: "download",
          host: label,
          path: remotePath,
          total: undefined,
          terminal: options.showProgress !== false && !settings.quiet,
          onProgress: options.onProgress
        })
        const written = yield* downloadTree(ctx, target, destination, meter)
        yield* meter.finish
        return { written, bytes: meter.bytes() }
      }
      if (destination._tag === "Local") yield* checkLocalTarget(localPlace, settings, destination.existing)
      const meter = yield* Progress.start({
        direction: "download",
        host: label,
        path: remotePath,
        total: kind.size,
        terminal: options.showProgress !== false && !settings.quiet,
        onProgress: options.onProgress
      })
      const written = yield* downloadFile(ctx, sftp, target, kind, destination, meter)
      yield* meter.finish
      return { written, bytes: kind.size }
    })
  )
  const millis = (yield* Clock.currentTimeMillis) - started
  yield* Effect.annotateCurrentSpan({
    host: label,
    remote: remotePath,
    local: shownLocal,
    bytes: result.bytes
  })
  yield* Effect.logDebug("download done").pipe(
    Effect.annotateLogs({ host: label, remote: remotePath, local: shownLocal, bytes: result.bytes, millis })
  )
  return result.written
})
