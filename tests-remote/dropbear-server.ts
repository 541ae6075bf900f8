/**
 * A throwaway Dropbear server on loopback, beside the OpenSSH one (`server.ts`): a second SSH
 * server implementation, with a login user (`tbsh`) whose login shell is `/bin/sh`. This wraps
 * `tests-remote/dropbear-server.sh`, which describes the server in `<stateDir>/server.json`.
 *
 * In vitest, `test/globalSetup.ts` starts one for the run (when it runs as root, which Dropbear
 * needs to log users in); test files find it with `readDropbearFromEnv()`.
 */
import { execFile, execFileSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const execFileAsync = promisify(execFile)

/** The environment variable that holds a running Dropbear server's state dir. */
export const DROPBEAR_STATE_ENV = "THREADBARE_DROPBEAR_STATE"

export const DROPBEAR_SCRIPT_PATH: string = fileURLToPath(new URL("./dropbear-server.sh", import.meta.url))

export interface DropbearDescription {
  readonly stateDir: string
  /** 127.0.0.1 */
  readonly host: string
  readonly port: number
  /** `tbsh`: login shell /bin/sh, passwordless sudo. */
  readonly user: string
  readonly loginShell: string
  /** The authorized private key (the OpenSSH server's, when one was given at start). */
  readonly keyPath: string
  /** known_hosts with the `[127.0.0.1]:port` entry of the run's host key. */
  readonly knownHostsPath: string
  /** Dropbear's own log (`-E`): where its assertions and exits show. */
  readonly logPath: string
}

export interface DropbearServer extends DropbearDescription {
  readonly stop: () => Promise<void>
  readonly stopSync: () => void
  /** Kills the open sessions (connections drop, their commands die); keeps listening. */
  readonly dropConnections: () => Promise<void>
  readonly isRunning: () => Promise<boolean>
  readonly readLog: () => string
}

/** Whether Dropbear can be started here: installed, and this process is root. */
export const dropbearAvailable = (): boolean =>
  process.getuid?.() === 0 &&
  (process.env["PATH"] ?? "").split(":").concat(["/usr/sbin"]).some((dir) =>
    dir !== "" && existsSync(`${dir}/dropbear`)
  )

/** Starts a server authorizing `clientKeyPath` (a private key with its `.pub` beside it). */
export const startDropbear = async (clientKeyPath?: string): Promise<DropbearServer> => {
  const { stdout } = await runScript(["start", ...(clientKeyPath === undefined ? [] : [clientKeyPath])])
  return readDropbear(stdout.trim().split("\n").at(-1) ?? "")
}

export const readDropbear = (stateDir: string): DropbearServer => {
  let description: DropbearDescription
  try {
    description = JSON.parse(readFileSync(`${stateDir}/server.json`, "utf8")) as DropbearDescription
  } catch (error) {
    throw new Error(`no running threadbare dropbear described in ${stateDir}/server.json`, { cause: error })
  }
  return {
    stateDir: description.stateDir,
    host: description.host,
    port: description.port,
    user: description.user,
    loginShell: description.loginShell,
    keyPath: description.keyPath,
    knownHostsPath: description.knownHostsPath,
    logPath: description.logPath,
    stop: async () => {
      if (existsSync(`${stateDir}/.threadbare-dropbear`)) await runScript(["stop", stateDir])
    },
    stopSync: () => {
      if (!existsSync(`${stateDir}/.threadbare-dropbear`)) return
      execFileSync("bash", [DROPBEAR_SCRIPT_PATH, "stop", stateDir], {
        stdio: ["ignore", "ignore", "inherit"]
      })
    },
    dropConnections: async () => {
      await runScript(["drop", stateDir])
    },
    isRunning: () =>
      execFileAsync("bash", [DROPBEAR_SCRIPT_PATH, "status", stateDir]).then(
        () => true,
        () => false
      ),
    readLog: () => readFileSync(description.logPath, "utf8")
  }
}

/**
 * The server `test/globalSetup.ts` started, or undefined where it could not start one (not root,
 * Dropbear not installed); tests skip Dropbear cases then, except in CI (see globalSetup).
 */
export const readDropbearFromEnv = (env: NodeJS.ProcessEnv = process.env): DropbearServer | undefined => {
  const stateDir = env[DROPBEAR_STATE_ENV]
  return stateDir === undefined || stateDir === "" ? undefined : readDropbear(stateDir)
}

const runScript = async (args: ReadonlyArray<string>) => {
  try {
    return await execFileAsync("bash", [DROPBEAR_SCRIPT_PATH, ...args], { timeout: 60_000 })
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim()
    throw new Error(`dropbear-server.sh ${args.join(" ")} failed${stderr ? `:\n${stderr}` : ""}`, {
      cause: error
    })
  }
}
