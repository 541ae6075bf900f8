/**
 * The machinery of `Testing.layer`: a recording of what a deploy program ran and moved, and the
 * scripted transports that answer it. Nothing here opens a connection or starts a process: the
 * transports it provides take the place of the real ones (the `LocalTransport` and
 * `RemoteTransport` references, and `TransferFake` for transfers), and the SSH service it
 * provides refuses to connect, so a program that reached for a real host would say so.
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as path from "node:path"
import { TransferError } from "../../Errors.ts"
import * as Output from "../../Output.ts"
import { resolveLocal, type Settings } from "../../Settings.ts"
import { SshConnections } from "../../Ssh.ts"
import type { Ending, Sink } from "../command/envelope.ts"
import { InProcessOnly } from "../execute/runs.ts"
import { LocalTransport, type LocalTransportShape } from "../local/process.ts"
import { RemoteTransport } from "../remote/run.ts"
import type { RemoteRequest, RemoteTransportShape } from "../remote/transport.ts"
import { parseHostString } from "../settings/hostString.ts"
import { makeResolver } from "../ssh/target.ts"
import { TransferFake, type TransferFakeShape } from "./transfers.ts"

// -- what a test writes ---------------------------------------------------------------------------

/**
 * How a scripted command answers: its exit code (default 0) and what it prints.
 *
 * @since 0.1.0
 */
export interface Reply {
  readonly exitCode?: number | undefined
  readonly stdout?: string | undefined
  readonly stderr?: string | undefined
}

/**
 * One scripted command: which commands it answers, and how. `command` matches the command as
 * the program wrote it (an argument list quoted and joined, as `CommandResult.command` shows it):
 * a string exactly, a RegExp anywhere in it, or a function of the whole recorded command.
 *
 * @since 0.1.0
 */
export interface Answer extends Reply {
  readonly command: string | RegExp | ((command: RecordedCommand) => boolean)
  /** Only for commands on this host (`"localhost"` for local commands). */
  readonly host?: string | undefined
  /** Only for local or only for remote commands. */
  readonly where?: "local" | "remote" | undefined
}

/**
 * What a deploy program meets under `Testing.layer`.
 *
 * @since 0.1.0
 */
export interface Script {
  /** Answers for commands, tried in order; the first that matches answers. */
  readonly commands?: ReadonlyArray<Answer> | undefined
  /**
   * Remote files, by absolute path (on every host) or `"host:/path"` (on that host only): they
   * answer `remoteFileExists` and downloads. Uploads add to them.
   */
  readonly files?: Readonly<Record<string, string | Uint8Array>> | undefined
  /**
   * How a command that no answer matches ends: `"fail"` (the default) stops the program with an
   * `UnscriptedCommand` defect naming it; a reply answers every such command with it.
   */
  readonly unscripted?: "fail" | Reply | undefined
}

// -- what a test reads ----------------------------------------------------------------------------

/**
 * A command the program ran, local or remote, with what decides how it runs.
 *
 * @since 0.1.0
 */
export interface RecordedCommand {
  readonly _tag: "Command"
  readonly where: "local" | "remote"
  /** The host as shown (`"localhost"` for a local command). */
  readonly host: string
  /** The user and port of the host string, when it names them. */
  readonly user: string | undefined
  readonly port: number | undefined
  /** The command as written (an argument list quoted and joined). */
  readonly command: string
  readonly sudo: boolean
  readonly sudoUser: string | undefined
  /** The working directory: `rcd`/`remoteWorkingDir` for remote commands, `lcd`/`cwd` for local ones. */
  readonly cwd: string | undefined
  readonly env: Readonly<Record<string, string>>
  /** Whether it ran through a shell (`useShell`). */
  readonly shell: boolean
}

/**
 * A `remoteFileExists` check.
 *
 * @since 0.1.0
 */
export interface RecordedFileExists {
  readonly _tag: "FileExists"
  readonly host: string
  readonly user: string | undefined
  /** The path checked, resolved against `rcd`. */
  readonly path: string
  readonly sudo: boolean
}

/**
 * An upload (`Transfer.upload`, or `rsyncUpload` with `rsync: true`).
 *
 * @since 0.1.0
 */
export interface RecordedUpload {
  readonly _tag: "Upload"
  readonly host: string
  readonly user: string | undefined
  /** The local path, or `"<memory>"` for content given in memory. */
  readonly source: string
  /** The content, when it was given in memory. */
  readonly content: Uint8Array | undefined
  /** The remote path, resolved against `rcd`. */
  readonly path: string
  readonly sudo: boolean
  readonly rsync: boolean
}

/**
 * A download (`Transfer.download`, or `rsyncDownload` with `rsync: true`).
 *
 * @since 0.1.0
 */
export interface RecordedDownload {
  readonly _tag: "Download"
  readonly host: string
  readonly user: string | undefined
  /** The remote path, resolved against `rcd`. */
  readonly path: string
  /** The local target, or `undefined` for a download into memory. */
  readonly target: string | undefined
  readonly sudo: boolean
  readonly rsync: boolean
}

/**
 * One thing the program did, in the order it did them.
 *
 * @since 0.1.0
 */
export type Recorded = RecordedCommand | RecordedFileExists | RecordedUpload | RecordedDownload

/**
 * A command that no answer of the script matched, under `unscripted: "fail"`.
 */
export class UnscriptedCommand extends Data.TaggedError("UnscriptedCommand")<{
  readonly command: RecordedCommand
}> {
  override get message(): string {
    const c = this.command
    return `Testing.layer: no scripted answer for the ${c.where} command ${
      JSON.stringify(c.command)
    } on ${c.host}` +
      `; add { command: ${JSON.stringify(c.command)}, exitCode: 0 } to the script's commands, ` +
      `or set unscripted to a reply`
  }
}

/** The recording of a program run under `Testing.layer`. */
export class Recorder extends Context.Service<Recorder, {
  /** Everything recorded so far, in order. */
  readonly recorded: Effect.Effect<ReadonlyArray<Recorded>>
}>()("effect-threadbare/Testing/Recorder") {}

// -- answering ------------------------------------------------------------------------------------

const encoder = new TextEncoder()
const bytesOf = (content: string | Uint8Array): Uint8Array =>
  typeof content === "string" ? encoder.encode(content) : content

const matches = (answer: Answer, command: RecordedCommand): boolean => {
  if (answer.where !== undefined && answer.where !== command.where) return false
  if (answer.host !== undefined && answer.host !== command.host) return false
  const pattern = answer.command
  return typeof pattern === "string"
    ? pattern === command.command
    : pattern instanceof RegExp
    ? new RegExp(pattern.source, pattern.flags.replace("g", "")).test(command.command)
    : pattern(command)
}

/** Hands a reply's output to the sink as a transport would, and ends with its exit code. */
const reply = (sink: Sink, answer: Reply, combine: boolean): Effect.Effect<Ending> =>
  Effect.gen(function*() {
    for (const [pipe, text] of [["out", answer.stdout], ["err", answer.stderr]] as const) {
      if (text === undefined || text === "") continue
      const into = combine ? "out" : pipe
      const buffer = into === "out" ? sink.out : sink.err
      yield* sink.print(into, buffer.push(text))
    }
    yield* sink.print("out", sink.out.end())
    yield* sink.print("err", sink.err.end())
    return { exitCode: answer.exitCode ?? 0, signal: null }
  })

const remotePathOf = (settings: Settings, file: string): string =>
  settings.remoteWorkingDir === undefined || path.posix.isAbsolute(file) || file.startsWith("~")
    ? file
    : path.posix.join(settings.remoteWorkingDir, file)

const hostOf = (settings: Settings): { host: string; user: string | undefined; port: number | undefined } => {
  const given = settings.host ?? ""
  const parsed = parseHostString(given)
  return parsed._tag === "Success"
    ? { host: parsed.success.host, user: parsed.success.user ?? settings.user, port: parsed.success.port }
    : { host: given, user: settings.user, port: undefined }
}

/**
 * Makes the scripted transports and the recorder over one recording and one set of files,
 * state of the layer: two layers never share a recording.
 */
export const make = (script: Script) => {
  const recording: Array<Recorded> = []
  const files = new Map<string, Uint8Array | undefined>()
  for (const [key, content] of Object.entries(script.files ?? {})) files.set(key, bytesOf(content))
  const record = (entry: Recorded) => Effect.sync(() => void recording.push(entry))
  const fileOn = (host: string, file: string): { found: boolean; content: Uint8Array | undefined } => {
    for (const key of [`${host}:${file}`, file]) {
      if (files.has(key)) return { found: true, content: files.get(key) }
    }
    return { found: false, content: undefined }
  }

  const answerCommand = (command: RecordedCommand, sink: Sink, combine: boolean) =>
    Effect.gen(function*() {
      yield* record(command)
      const answer = (script.commands ?? []).find((a) => matches(a, command))
      if (answer !== undefined) return yield* reply(sink, answer, combine)
      const fallback = script.unscripted ?? "fail"
      if (fallback === "fail") return yield* Effect.die(new UnscriptedCommand({ command }))
      return yield* reply(sink, fallback, combine)
    })

  const local: LocalTransportShape = {
    // No file system under test: the directory is the program's claim, recorded as `cwd`.
    checkDirectory: () => Effect.void,
    start: (request, sink) =>
      answerCommand(
        {
          _tag: "Command",
          where: "local",
          host: "localhost",
          user: undefined,
          port: undefined,
          command: request.display,
          sudo: request.useSudo,
          sudoUser: request.sudoUser,
          cwd: request.cwd,
          env: request.env,
          shell: request.useShell
        },
        sink,
        request.combineStderr
      )
  }

  const remote: RemoteTransportShape = {
    start: (request, sink) => Effect.succeed(answerRemote(request, sink))
  }
  const answerRemote = (request: RemoteRequest, sink: Sink): Effect.Effect<Ending> => {
    const { settings } = request
    if (request.purpose._tag === "FileExists") {
      const file = remotePathOf(settings, request.purpose.path)
      return Effect.as(
        record({
          _tag: "FileExists",
          host: request.host,
          user: request.user,
          path: file,
          sudo: settings.useSudo
        }),
        { exitCode: fileOn(request.host, file).found ? 0 : 1, signal: null }
      )
    }
    return answerCommand(
      {
        _tag: "Command",
        where: "remote",
        host: request.host,
        user: request.user,
        port: request.port,
        command: request.built.display,
        sudo: settings.useSudo,
        sudoUser: settings.sudoUser,
        cwd: settings.remoteWorkingDir,
        env: settings.env,
        shell: settings.useShell
      },
      sink,
      settings.combineStderr || settings.pty
    )
  }

  const transfers: TransferFakeShape = {
    upload: ({ remotePath, settings, source }) =>
      Effect.gen(function*() {
        const { host, user } = hostOf(settings)
        const target = remotePathOf(settings, remotePath)
        const content = typeof source === "string"
          ? undefined
          : source instanceof Uint8Array
          ? source
          : bytesOf(source.content)
        const shown = typeof source === "string" ? resolveLocal(settings, source) : "<memory>"
        yield* Output.printRunning(host, settings.useSudo ? "sudo put" : "put", `${shown} -> ${remotePath}`)
        if (settings.dryRun) return remotePath
        yield* record({
          _tag: "Upload",
          host,
          user,
          source: shown,
          content,
          path: target,
          sudo: settings.useSudo,
          rsync: false
        })
        files.set(`${host}:${target}`, content)
        return target
      }),
    download: ({ remotePath, settings, target }) =>
      Effect.gen(function*() {
        const { host, user } = hostOf(settings)
        const file = remotePathOf(settings, remotePath)
        const local = target === undefined ? undefined : resolveLocal(settings, target)
        yield* Output.printRunning(
          host,
          settings.useSudo ? "sudo get" : "get",
          `${remotePath} -> ${local ?? "<memory>"}`
        )
        // As a real dry run: nothing recorded, nothing written, nothing read.
        if (settings.dryRun) return { content: new Uint8Array(0), local, dryRun: true }
        yield* record({
          _tag: "Download",
          host,
          user,
          path: file,
          target: local,
          sudo: settings.useSudo,
          rsync: false
        })
        const found = fileOn(host, file)
        if (!found.found) {
          return yield* new TransferError({
            host,
            path: remotePath,
            side: "remote",
            reason: "not-found",
            detail: "no such file in the test script's files"
          })
        }
        return { local, content: found.content ?? new Uint8Array(0) }
      }),
    rsync: ({ direction, localPath, remotePath, settings }) =>
      Effect.gen(function*() {
        const { host, user } = hostOf(settings)
        const local = resolveLocal(settings, localPath)
        const remoteFile = remotePathOf(settings, remotePath)
        yield* Output.printRunning(
          host,
          "rsync",
          direction === "upload" ? `${local} -> ${remotePath}` : `${remotePath} -> ${local}`
        )
        if (settings.dryRun) return
        yield* record(
          direction === "upload"
            ? {
              _tag: "Upload",
              host,
              user,
              source: local,
              content: undefined,
              path: remoteFile,
              sudo: settings.useSudo,
              rsync: true
            }
            : {
              _tag: "Download",
              host,
              user,
              path: remoteFile,
              target: local,
              sudo: settings.useSudo,
              rsync: true
            }
        )
        if (direction === "upload") files.set(`${host}:${remoteFile}`, undefined)
      })
  }

  return { local, remote, transfers, recorded: Effect.sync(() => recording.slice()) }
}

/**
 * An SSH service that refuses to connect: under the test layer, reaching for a real host is a bug
 * of the test. Targets are still resolved as in a real run (ssh config, settings), so a setting
 * that a real run would refuse is refused here too.
 */
const refusingSsh = () =>
  SshConnections.of({
    resolve: makeResolver(),
    connect: (settings) =>
      Effect.die(
        new Error(
          `Testing.layer: an SSH connection to ${settings.host ?? "(no host)"} was asked for; ` +
            "every operation should have been answered by the script"
        )
      )
  })

/** The test layer: scripted transports, a refusing SSH service, and the recorder. */
export const layer = (script: Script): Layer.Layer<Recorder | SshConnections> =>
  Layer.effectContext(Effect.sync(() => {
    const made = make(script)
    return Context.make(Recorder, Recorder.of({ recorded: made.recorded })).pipe(
      Context.add(LocalTransport, made.local),
      Context.add(RemoteTransport, made.remote),
      Context.add(TransferFake, made.transfers),
      Context.add(SshConnections, refusingSsh()),
      Context.add(InProcessOnly, true)
    )
  }))
