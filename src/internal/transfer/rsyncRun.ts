/**
 * The machinery of `Transfer.rsyncUpload` / `rsyncDownload`: the system `rsync` over `ssh`, with
 * its arguments built so that no path is read as a pattern or an option, and its exit explained.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ChildProcess from "effect/process/ChildProcess"
import { ChildProcessSpawner } from "effect/process/ChildProcessSpawner"
import * as Stream from "effect/Stream"
import * as path from "node:path"
import * as Output from "../../Output.ts"
import { resolveLocal, Settings } from "../../Settings.ts"
import { SshConnections } from "../../Ssh.ts"
import type { Target } from "../../Ssh.ts"
import { quote } from "../command/shell.ts"
import { readKey } from "../ssh/client.ts"
import * as ProxyCommand from "../ssh/proxyCommand.ts"
import { proxyCommandOf } from "../ssh/proxyCommand.ts"
import * as Intercept from "../testing/transfers.ts"
import * as Io from "./io.ts"
import { nonEmpty, withOptions } from "./job.ts"
import * as LocalFiles from "./localFiles.ts"
import type { RsyncOptions } from "./options.ts"
import * as Remote from "./remote.ts"
import * as Rsync from "./rsync.ts"

export const runRsync = Effect.fnUntraced(function*(
  direction: "upload" | "download",
  localPath: string,
  remotePath: string,
  options: RsyncOptions
) {
  yield* nonEmpty("localPath", localPath)
  yield* nonEmpty("remotePath", remotePath)
  const settings = withOptions(yield* Settings, options)
  // Under `Testing.layer` the transfer is recorded, and nothing runs.
  if (Option.isSome(yield* Intercept.interceptRsync(direction, localPath, remotePath, settings))) return
  const target = yield* (yield* SshConnections).resolve(settings)
  // A bad key file is a setting error here as for every other operation, not a failed ssh login.
  yield* readKey(target)
  const label = target.label
  // A trailing slash means "the contents of" to rsync: keep it through path resolution.
  const slash = (p: string, given: string) => (given.endsWith("/") && !p.endsWith("/") ? `${p}/` : p)
  const local = slash(resolveLocal(settings, localPath), localPath)
  const remote = slash(Remote.remotePath(settings, remotePath), remotePath)
  const remoteDir = path.posix.dirname(remote.replace(/\/+$/, "")) || "."
  // rsync creates only the last directory of a destination; the parents are made here, as the
  // user the remote rsync runs as, since only root may write where a sudo upload goes.
  const sudo = settings.useSudo ? "sudo -n " : ""
  // The remote rsync expands `*`, `?` and `[` in every path it is given, even with `-s`, and
  // keeps a pattern that matches nothing as it is: a destination `/srv/a*/` would land in an
  // existing `/srv/a-old/`. So an upload runs the remote rsync inside its destination directory
  // (entered by the shell, which takes the quoted name literally) and names the destination
  // `.` there, or the bare file name, which must then be free of patterns.
  const intoDir = remote.endsWith("/")
  const destDir = intoDir ? remote : remoteDir
  const destName = intoDir ? "." : path.posix.basename(remote)
  const rsyncPath = direction === "upload"
    ? `${sudo}mkdir -p -- ${quote(destDir)} && ${sudo}sh -c 'cd -- "$1" && shift && exec rsync "$@"' sh ${
      quote(destDir)
    }`
    : `${sudo}rsync`
  // Through the same ProxyCommands as the SSH operations, the target's and its jump hosts'.
  const proxyLines = new Map<Target, string>()
  for (let hop: Target | undefined = target; hop !== undefined; hop = hop.gateway) {
    const proxy = proxyCommandOf(hop)
    if (proxy !== undefined) proxyLines.set(hop, yield* ProxyCommand.expand(proxy, hop))
  }
  const args = [
    "-a",
    "-s", // arguments travel inside the rsync protocol, never through the remote shell
    "-e",
    Rsync.sshCommand(target, Duration.toSeconds(target.connectTimeout), proxyLines),
    `--rsync-path=${rsyncPath}`,
    ...(options.delete === true ? ["--delete"] : []),
    ...(options.exclude ?? []).map((pattern) => `--exclude=${pattern}`),
    ...(options.options ?? []),
    "--",
    ...(direction === "upload"
      ? [local, Rsync.remoteSpec(target, destName)]
      : [Rsync.remoteSpec(target, Rsync.literalSource(remote)), local])
  ]
  const shown = direction === "upload" ? `${local} -> ${remotePath}` : `${remotePath} -> ${local}`
  yield* Output.printRunning(label, "rsync", shown)
  if (settings.dryRun) return
  const place: Io.Place = direction === "upload"
    ? { host: label, side: "remote", path: remotePath }
    : { host: label, side: "local", path: local }
  const unsafe = Rsync.unsafeTarget(target)
  if (unsafe !== undefined) return yield* Io.transferError(place, "rsync", unsafe)
  if (direction === "upload" && /[*?[]/.test(destName)) {
    return yield* Io.transferError(
      place,
      "rsync",
      `the remote rsync would read the name ${
        JSON.stringify(destName)
      } as a pattern (*, ? or [); end the remote path with / to copy into a directory of that name, or choose a name without them`
    )
  }
  if (direction === "download") {
    const dir = local.endsWith("/") ? local : path.dirname(local)
    yield* LocalFiles.localMkdirs(place, dir)
  }
  const started = yield* Clock.currentTimeMillis
  const spawner = yield* ChildProcessSpawner
  const outcome = yield* Effect.scoped(Effect.gen(function*() {
    const handle = yield* spawner.spawn(
      ChildProcess.make("rsync", args, { stdin: "ignore", stdout: "pipe", stderr: "pipe", detached: true })
    )
    const [stderr] = yield* Effect.all([
      Stream.mkString(Stream.decodeText(handle.stderr)),
      Stream.runDrain(handle.stdout)
    ], { concurrency: 2 })
    const code = yield* handle.exitCode
    return { code: Number(code), stderr }
  })).pipe(
    Effect.catchTag(
      "PlatformError",
      (error) =>
        Effect.fail(
          Io.transferError(place, "rsync", `cannot run rsync: ${error.message} (is rsync installed?)`)
        )
    )
  )
  if (outcome.code !== 0) {
    const said = outcome.stderr.trim().split("\n").slice(-4).join("\n")
    return yield* Io.transferError(
      place,
      "rsync",
      `rsync exited with ${outcome.code} (${Rsync.explainFailure(outcome.code, outcome.stderr)})${
        said === "" ? "" : `: ${said}`
      }`
    )
  }
  const millis = (yield* Clock.currentTimeMillis) - started
  yield* Effect.annotateCurrentSpan({ host: label, local, remote: remotePath })
  yield* Effect.logDebug(`rsync ${direction} done`).pipe(
    Effect.annotateLogs({ host: label, local, remote: remotePath, millis })
  )
})
