/**
 * Helpers shared by the test files that talk to the throwaway OpenSSH server of `tests-remote/`:
 * connection settings, typed failures, process-table polling, signals, users, and temporary
 * directories with the leftovers a transfer may leave in them.
 *
 * Plain functions, no test: importing this module starts nothing and reads nothing. The server's
 * description is read (with `readServerFromEnv()`) only inside the functions that need it.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { ConnectionError } from "../src/Errors.ts"
import * as Settings from "../src/Settings.ts"
import { readServerFromEnv, remoteProcesses, type ServerDescription } from "../tests-remote/server.ts"

/**
 * The settings every test connection shares: the test server's key and known_hosts, strict host
 * key checking, and nothing of this machine's own ssh configuration or agent. Plain values, so
 * they can also be handed to a child program as JSON.
 */
export const connectionSettings = (
  server: Pick<ServerDescription, "keyPath" | "knownHostsPath"> = readServerFromEnv()
) =>
  ({
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    hostKeyPolicy: "strict",
    sshConfigFile: false,
    useAgent: false
  }) as const

/**
 * Around an effect: the test server's user and port and {@link connectionSettings}, with `patch`
 * on top (hosts are given per run).
 */
export const serverConnection = (
  patch: Settings.Patch = {},
  server: ServerDescription = readServerFromEnv()
) => Settings.settings({ port: server.port, user: server.user, ...connectionSettings(server), ...patch })

/** A settings layer of {@link connectionSettings} for the test server, with `patch` on top. */
export const settingsLayer = (patch: Settings.Patch): Layer.Layer<never> =>
  Settings.layer({ ...connectionSettings(), ...patch })

/** The typed error of a failed exit; throws when it succeeded or failed with a defect. */
export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${String(exit.value)}`)
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "None") throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return error.value
}

/** The `ConnectionError` of a failed exit; throws when it failed otherwise or succeeded. */
export const connectionFailure = (exit: Exit.Exit<unknown, unknown>): ConnectionError => {
  const error = failureOf(exit)
  if (!(error instanceof ConnectionError)) throw new Error(`expected a ConnectionError, got ${String(error)}`)
  return error
}

/** A text no other process's command line holds, to find a test's own processes by. */
export const uniqueMarker = (name: string): string =>
  `tbmark_${name}_${process.pid}_${Math.random().toString(36).slice(2, 10)}`

/** Polls the process table until `pattern` shows up (or not), for at most `seconds`. */
export const waitForProcesses = (pattern: string, present: boolean, seconds = 10): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds * 10; i++) {
      if ((remoteProcesses(pattern).length > 0) === present) return true
      yield* Effect.sleep("100 millis")
    }
    return false
  })

/** Polls `check` every 100 ms until it holds, for at most `millis`; whether it did. */
export const pollUntil = (check: () => boolean, millis: number): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    for (let waited = 0; waited <= millis; waited += 100) {
      if (check()) return true
      yield* Effect.sleep("100 millis")
    }
    return false
  })

/** Sends `name` to `pid`; a process gone already is no error. */
export const signal = (pid: number, name: NodeJS.Signals): void => {
  try {
    process.kill(pid, name)
  } catch {
    // gone already
  }
}

/** The fields of `name`'s line in /etc/passwd, or none when there is no such user. */
const passwdEntry = (name: string): ReadonlyArray<string> =>
  fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${name}:`))?.split(":") ?? []

/** The user id of `name` from /etc/passwd, or -1 when there is no such user. */
export const uid = (name: string): number => Number(passwdEntry(name)[2] ?? -1)

/** The home directory of `name` from /etc/passwd, or "" when there is no such user. */
export const homeOf = (name: string): string => passwdEntry(name)[5] ?? ""

/**
 * A maker of temporary directories under the system's temporary directory: `tempDir(prefix)`
 * makes one, and `made` lists every one made so far, for the file's `afterAll` to remove.
 */
export const tempDirs = () => {
  const made: Array<string> = []
  const tempDir = (prefix: string): string => {
    const dir = fs.mkdtempSync(path.join(tmpdir(), prefix))
    made.push(dir)
    return dir
  }
  return { made, tempDir }
}

/**
 * A maker of directory pairs: `remote` (`<prefix>remote-...`) owned by `owner` with mode 755, the
 * remote side of a transfer, and `local` (`<prefix>local-...`) for the local side.
 */
export const dirPairs = (tempDir: (prefix: string) => string, prefix: string, owner: number) => () => {
  const remote = tempDir(`${prefix}remote-`)
  fs.chownSync(remote, owner, owner)
  fs.chmodSync(remote, 0o755)
  const local = tempDir(`${prefix}local-`)
  return { remote, local }
}

/**
 * A staging directory (`remoteTempDir`) of a test file's own, owned by `owner` with mode 700, so
 * that its leftover checks see only that file's transfers.
 */
export const stagingDirFor = (prefix: string, owner: number): string => {
  const dir = fs.mkdtempSync(path.join(tmpdir(), prefix))
  fs.chownSync(dir, owner, owner)
  fs.chmodSync(dir, 0o700)
  return dir
}

/** The transfer temporaries (names holding `.tb-`) left in `dir`; none when it is gone. */
export const leftovers = (dir: string): Array<string> =>
  fs.existsSync(dir) ? fs.readdirSync(dir).filter((name) => name.includes(".tb-")) : []

/** The transfer staging entries (names starting with `.tb-`) left in `stagingDir`. */
export const stagingLeftovers = (stagingDir: string): Array<string> =>
  fs.readdirSync(stagingDir).filter((name) => name.startsWith(".tb-"))
