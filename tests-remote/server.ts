/**
 * A throwaway OpenSSH server on loopback for tests, benchmarks and examples.
 *
 * This wraps `tests-remote/sshd-server.sh`, which does the real work (keys, users, sshd_config, one
 * sshd per 16 loopback addresses) and describes the server in `<stateDir>/server.json`. Plain
 * TypeScript on purpose: test infrastructure should not depend on the library it tests.
 *
 *   const server = await startServer({ hostCount: 4 })
 *   // ssh to server.hosts[2]:server.port as server.user with server.keyPath ...
 *   await server.stop()
 *
 * In vitest, `test/globalSetup.ts` starts one server for the run; test files find it with
 * `readServerFromEnv()`.
 */
import { execFile, execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const execFileAsync = promisify(execFile)

/** The environment variable that holds a running server's state dir. */
export const STATE_ENV = "THREADBARE_SSHD_STATE"

/** The shell script behind this module. */
export const SCRIPT_PATH: string = fileURLToPath(new URL("./sshd-server.sh", import.meta.url))

/** Settings the script reads from the environment; cleared so a sourced env file cannot leak in. */
const SCRIPT_SETTINGS = [
  "THREADBARE_SSHD_DIR",
  "THREADBARE_SSHD_PORT",
  "THREADBARE_SSHD_HOST_COUNT",
  STATE_ENV
]

export interface StartOptions {
  /** Loopback hosts 127.0.0.1 .. 127.0.0.N; default 16, at most 250. */
  readonly hostCount?: number
  /** Port for every host; default: a free port. */
  readonly port?: number
  /** State dir; default: a fresh dir under /tmp. Removed by `stop()`. */
  readonly stateDir?: string
}

/** What `<stateDir>/server.json` says, plus the password read from its file. */
export interface ServerDescription {
  readonly stateDir: string
  /** 127.0.0.1 */
  readonly host: string
  /** 127.0.0.1 .. 127.0.0.N, each a "host" with the same host key and users. */
  readonly hosts: ReadonlyArray<string>
  readonly port: number
  /** The user to log in as: `tbtest` (passwordless sudo) when the server runs as root, else the current user. */
  readonly user: string
  /** Private ed25519 key (no passphrase) accepted for every user. */
  readonly keyPath: string
  /** known_hosts with a `[127.0.0.X]:port` entry for every host. */
  readonly knownHostsPath: string
  /** ssh_config with `Host tb1` .. `tbN` (for `ssh -F`), using the key and known_hosts above. */
  readonly sshConfigPath: string
  /** A user whose sudo asks for its password (`tbpass`); undefined unless the server runs as root. */
  readonly passwordUser: string | undefined
  /** That user's password (for sudo and for password logins). */
  readonly passwordUserPassword: string | undefined
  /** A user with no login and no sudo (`tbother`), a target for `sudo -u`; undefined unless root. */
  readonly otherUser: string | undefined
  /** Whether sshd runs as root (and so the users above exist). */
  readonly isRoot: boolean
  /** sshd's log (LogLevel VERBOSE), shared by all its processes. */
  readonly logPath: string
  readonly sshdConfigPath: string
  /** The server's OpenSSH certificates, and client files to test them with. */
  readonly certificates: ServerCertificates
}

/**
 * sshd also presents its host key as a certificate (HostCertificate) signed by a host CA, and
 * trusts user certificates signed by a user CA (TrustedUserCAKeys). The plain host key stays on
 * offer and in `knownHostsPath`, so clients that know nothing of certificates are served as before.
 */
export interface ServerCertificates {
  /** A known_hosts with only `@cert-authority [127.0.0.X]:port <host CA>` lines, no plain key. */
  readonly knownHostsCaPath: string
  readonly hostCaPublicKeyPath: string
  readonly userCaPublicKeyPath: string
  /** A copy of `keyPath` (authorized) with a user certificate beside it (`<path>-cert.pub`). */
  readonly plusKeyPath: string
  /** A key NOT in authorized_keys, with a certificate beside it: it logs in only by certificate. */
  readonly onlyKeyPath: string
}

export interface Server extends ServerDescription {
  /** Stops every process of this server (listeners, sessions, the commands they run) and removes its state dir. */
  readonly stop: () => Promise<void>
  /** `stop()` for exit handlers. */
  readonly stopSync: () => void
  /**
   * Kills all sshd processes of this server, which drops every open connection, then starts them
   * again on the same port with the same keys, like a server rebooted between two commands.
   */
  readonly restart: () => Promise<void>
  /** Kills the open sessions (connections drop, their commands die); keeps listening. */
  readonly dropConnections: () => Promise<void>
  /** Whether every listener of this server is alive. */
  readonly isRunning: () => Promise<boolean>
  /** Pids of the listening sshd processes (one per 16 hosts). */
  readonly listenerPids: () => ReadonlyArray<number>
  /** Pids of all live sshd processes of this server: listeners and per-connection processes. */
  readonly sshdPids: () => ReadonlyArray<number>
  /** The log so far. */
  readonly readLog: () => string
}

/** A process on the server machine (which is this machine). */
export interface ProcessInfo {
  readonly pid: number
  readonly ppid: number
  readonly user: string
  /** Process name as the kernel knows it (`sshd`, `sleep`). */
  readonly comm: string
  /** Full command line. */
  readonly args: string
}

/** Starts a server and resolves once every host answers SSH. */
export const startServer = async (options: StartOptions = {}): Promise<Server> => {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of SCRIPT_SETTINGS) delete env[name]
  if (options.hostCount !== undefined) env["THREADBARE_SSHD_HOST_COUNT"] = String(options.hostCount)
  if (options.port !== undefined) env["THREADBARE_SSHD_PORT"] = String(options.port)
  if (options.stateDir !== undefined) env["THREADBARE_SSHD_DIR"] = options.stateDir
  const { stdout } = await runScript(["start"], env)
  const stateDir = stdout.trim().split("\n").at(-1) ?? ""
  return readServer(stateDir)
}

/** The server described in `stateDir` (started by `startServer` or `sshd-server.sh start`). */
export const readServer = (stateDir: string): Server => {
  const description = readDescription(stateDir)
  const script = (command: string) => async () => {
    await runScript([command, stateDir])
  }
  return {
    ...description,
    stop: async () => {
      if (existsSync(`${stateDir}/.threadbare-sshd`)) await runScript(["stop", stateDir])
    },
    stopSync: () => {
      if (!existsSync(`${stateDir}/.threadbare-sshd`)) return
      execFileSync("bash", [SCRIPT_PATH, "stop", stateDir], { stdio: ["ignore", "ignore", "inherit"] })
    },
    restart: script("restart"),
    dropConnections: script("drop"),
    isRunning: () =>
      execFileAsync("bash", [SCRIPT_PATH, "status", stateDir]).then(
        () => true,
        () => false
      ),
    listenerPids: () => listenerPids(stateDir),
    sshdPids: () => {
      const listeners = listenerPids(stateDir)
      const tree = descendants(processTable(), listeners)
      return tree.filter((p) => p.comm.startsWith("sshd")).map((p) => p.pid)
    },
    readLog: () => readFileSync(description.logPath, "utf8")
  }
}

/**
 * The server that `test/globalSetup.ts` (or a human, with `export THREADBARE_SSHD_STATE=<dir>`)
 * started, found through `THREADBARE_SSHD_STATE`.
 */
export const readServerFromEnv = (env: NodeJS.ProcessEnv = process.env): Server => {
  const stateDir = env[STATE_ENV]
  if (stateDir === undefined || stateDir === "") {
    throw new Error(
      `${STATE_ENV} is not set: run the tests with vitest (test/globalSetup.ts starts the server), ` +
        `or start one with \`tests-remote/sshd-server.sh start\` and export ${STATE_ENV}=<the dir it prints>`
    )
  }
  return readServer(stateDir)
}

/** Processes on the server machine whose command line contains `pattern` (or matches it). Zombies are left out. */
export const remoteProcesses = (pattern: string | RegExp): ReadonlyArray<ProcessInfo> =>
  processTable().filter((p) =>
    p.pid !== process.pid && (typeof pattern === "string" ? p.args.includes(pattern) : pattern.test(p.args))
  )

/** Every live sshd process on this machine, whichever server it belongs to (to check none is left). */
export const sshdProcesses = (): ReadonlyArray<ProcessInfo> =>
  processTable().filter((p) => p.comm.startsWith("sshd"))

/** Path of the OpenSSH server, or undefined when it is not installed. */
export const findSshd = (): string | undefined => {
  for (const dir of (process.env["PATH"] ?? "").split(":").concat(["/usr/sbin", "/usr/local/sbin"])) {
    if (dir !== "" && existsSync(`${dir}/sshd`)) return `${dir}/sshd`
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------

const runScript = async (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = process.env) => {
  try {
    return await execFileAsync("bash", [SCRIPT_PATH, ...args], { env, timeout: 120_000, maxBuffer: 16 << 20 })
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim()
    throw new Error(`sshd-server.sh ${args.join(" ")} failed${stderr ? `:\n${stderr}` : ""}`, {
      cause: error
    })
  }
}

interface ServerJson {
  readonly stateDir: string
  readonly host: string
  readonly hosts: ReadonlyArray<string>
  readonly port: number
  readonly user: string
  readonly keyPath: string
  readonly knownHostsPath: string
  readonly sshConfigPath: string
  readonly passwordUser: string | null
  readonly passwordFile: string | null
  readonly otherUser: string | null
  readonly isRoot: boolean
  readonly logPath: string
  readonly sshdConfigPath: string
  readonly certificates: ServerCertificates
}

const readDescription = (stateDir: string): ServerDescription => {
  let json: ServerJson
  try {
    json = JSON.parse(readFileSync(`${stateDir}/server.json`, "utf8")) as ServerJson
  } catch (error) {
    throw new Error(`no running threadbare sshd described in ${stateDir}/server.json`, { cause: error })
  }
  return {
    stateDir: json.stateDir,
    host: json.host,
    hosts: json.hosts,
    port: json.port,
    user: json.user,
    keyPath: json.keyPath,
    knownHostsPath: json.knownHostsPath,
    sshConfigPath: json.sshConfigPath,
    passwordUser: json.passwordUser ?? undefined,
    passwordUserPassword: json.passwordFile === null
      ? undefined
      : readFileSync(json.passwordFile, "utf8").trim(),
    otherUser: json.otherUser ?? undefined,
    isRoot: json.isRoot,
    logPath: json.logPath,
    sshdConfigPath: json.sshdConfigPath,
    certificates: json.certificates
  }
}

/**
 * Listener pids from the pid files. A pid file can outlive its process and the pid be reused, so a
 * pid only counts while that process still runs this server's sshd_config.
 */
const listenerPids = (stateDir: string): Array<number> => {
  const table = processTable()
  const pids: Array<number> = []
  for (let group = 0; existsSync(`${stateDir}/sshd-${group}.pid`); group++) {
    const pid = Number(readFileSync(`${stateDir}/sshd-${group}.pid`, "utf8").trim())
    const entry = table.find((p) => p.pid === pid)
    if (entry !== undefined && entry.args.includes(`${stateDir}/sshd_config`)) pids.push(pid)
  }
  return pids
}

/** The given processes and all their descendants. */
const descendants = (table: ReadonlyArray<ProcessInfo>, roots: ReadonlyArray<number>): Array<ProcessInfo> => {
  const keep = new Set(roots)
  for (let grew = true; grew;) {
    grew = false
    for (const p of table) {
      if (!keep.has(p.pid) && keep.has(p.ppid)) {
        keep.add(p.pid)
        grew = true
      }
    }
  }
  return table.filter((p) => keep.has(p.pid))
}

/**
 * Live processes of this machine, read from /proc, without zombies: where PID 1 reaps slowly, a killed
 * process can linger as `<defunct>` for a second or two, but it is gone for every purpose a test has.
 */
const processTable = (): Array<ProcessInfo> => {
  const users = userNames()
  const table: Array<ProcessInfo> = []
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    try {
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")".
      const stat = readFileSync(`/proc/${name}/stat`, "utf8")
      const close = stat.lastIndexOf(")")
      const [state, ppid] = stat.slice(close + 2).split(" ")
      if (state === "Z" || state === "X") continue
      const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, "utf8"))?.[1] ?? ""
      table.push({
        pid: Number(name),
        ppid: Number(ppid),
        user: users.get(uid) ?? uid,
        comm: stat.slice(stat.indexOf("(") + 1, close),
        args: readFileSync(`/proc/${name}/cmdline`, "utf8").replace(/\0+$/, "").replaceAll("\0", " ")
      })
    } catch {
      // the process ended while being read
    }
  }
  return table
}

const userNames = (): Map<string, string> => {
  const names = new Map<string, string>()
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [name, , uid] = line.split(":")
    if (name && uid !== undefined) names.set(uid, name)
  }
  return names
}
