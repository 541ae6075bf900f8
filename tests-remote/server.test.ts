/**
 * Checks the throwaway OpenSSH server itself, with the OpenSSH client, so that a broken test server
 * shows up here rather than as puzzling failures in the library's tests.
 */
import { execFile, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { Client } from "ssh2"
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest"
import { readServerFromEnv, remoteProcesses, type Server, startServer } from "./server.ts"

const execFileAsync = promisify(execFile)

/** ssh with the server's own ssh_config: its key, its known_hosts, strict host key checking. */
const sshArgs = (server: Server, host: string, user: string, command: string) => [
  "-F",
  server.sshConfigPath,
  "-o",
  "BatchMode=yes",
  "-o",
  `HostName=${host}`,
  "-l",
  user,
  "threadbare-test",
  command
]

const ssh = async (server: Server, host: string, user: string, command: string, stdin?: string) => {
  const child = execFileAsync("ssh", sshArgs(server, host, user, command), { timeout: 30_000 })
  if (stdin !== undefined) child.child.stdin?.end(stdin)
  const { stdout } = await child
  return stdout.trim()
}

const sshFails = (server: Server, host: string, user: string, command: string) =>
  ssh(server, host, user, command).then(
    () => false,
    () => true
  )

describe("the shared test server (global setup)", () => {
  const server = readServerFromEnv()

  it("is the one global setup provided", () => {
    expect(inject("threadbareSshdState")).toBe(server.stateDir)
  })

  it("listens on loopback only, on every alias, with the recorded host key", async () => {
    expect(server.hosts).toHaveLength(16)
    expect(server.hosts.every((host) => host.startsWith("127.0.0."))).toBe(true)
    for (const host of [server.hosts[0]!, server.hosts[4]!, server.hosts.at(-1)!]) {
      expect(await ssh(server, host, server.user, "echo $SSH_CONNECTION")).toMatch(
        new RegExp(` ${host.replaceAll(".", "\\.")} ${server.port}$`)
      )
    }
    const sshdConfig = readFileSync(server.sshdConfigPath, "utf8")
    expect(sshdConfig).toMatch(/^MaxSessions 10$/m)
    expect(sshdConfig).not.toMatch(/^AcceptEnv/m)
  })

  it("refuses a host key that is not in known_hosts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "threadbare-kh-"))
    try {
      writeFileSync(join(dir, "known_hosts"), "")
      const args = sshArgs(server, server.host, server.user, "true")
      args.splice(2, 0, "-o", `UserKnownHostsFile=${join(dir, "known_hosts")}`)
      await expect(execFileAsync("ssh", args)).rejects.toThrow(/Host key verification failed/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("runs commands with a plain profile", async () => {
    expect(await ssh(server, server.host, server.user, "id -un; echo $0")).toBe(`${server.user}\nbash`)
  })

  it("serves SFTP", async () => {
    const dir = mkdtempSync(join(tmpdir(), "threadbare-sftp-"))
    try {
      writeFileSync(join(dir, "up.txt"), "hello sftp\n")
      const batch = `put ${join(dir, "up.txt")} threadbare-sftp-check.txt\n` +
        `get threadbare-sftp-check.txt ${join(dir, "down.txt")}\nrm threadbare-sftp-check.txt\n`
      const child = execFileAsync("sftp", ["-F", server.sshConfigPath, "-b", "-", "tb1"], {
        timeout: 30_000
      })
      child.child.stdin?.end(batch)
      await child
      expect(readFileSync(join(dir, "down.txt"), "utf8")).toBe("hello sftp\n")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  describe.runIf(server.isRoot)("users (server running as root)", () => {
    it("tbtest has passwordless sudo, also to another user", async () => {
      expect(await ssh(server, server.host, server.user, "sudo -n id -un")).toBe("root")
      expect(await ssh(server, server.host, server.user, `sudo -n -u ${server.otherUser} id -un`)).toBe(
        server.otherUser
      )
    })

    it("tbpass needs its password for sudo, every time", async () => {
      const user = server.passwordUser!
      expect(await sshFails(server, server.host, user, "sudo -n true")).toBe(true)
      const answer = `${server.passwordUserPassword}\n`
      expect(await ssh(server, server.host, user, "sudo -S -p '' id -un", answer)).toBe("root")
      // no cached credentials: right after a sudo that got the password, the next one asks again
      expect(
        await ssh(server, server.host, user, "sudo -S -p '' true; sudo -n true 2>/dev/null; echo $?", answer)
      )
        .toBe("1")
    })

    it("tbpass can log in with its password", async () => {
      const client = new Client()
      const done = new Promise<void>((resolve, reject) => {
        client.on("ready", () => resolve()).on("error", reject)
      })
      client.connect({
        host: server.host,
        port: server.port,
        username: server.passwordUser!,
        password: server.passwordUserPassword!,
        readyTimeout: 20_000
      })
      try {
        await done
      } finally {
        client.end()
      }
    })

    it("tbother cannot log in", async () => {
      expect(await sshFails(server, server.host, server.otherUser!, "true")).toBe(true)
    })
  })
})

describe("a server of its own (restart, drop, more than 16 hosts)", () => {
  let server: Server

  beforeAll(async () => {
    server = await startServer({ hostCount: 17 })
  })
  afterAll(async () => {
    await server?.stop()
  })

  it("runs one sshd per 16 hosts", async () => {
    expect(server.listenerPids()).toHaveLength(2)
    expect(await ssh(server, "127.0.0.17", server.user, "echo ok")).toBe("ok")
  })

  it("restart drops connections and kills their commands; same port and keys afterwards", async () => {
    const marker = `sleep 3${Math.floor(Math.random() * 1e6)}`
    const client = spawn("ssh", sshArgs(server, server.host, server.user, marker), { stdio: "ignore" })
    const exited = new Promise<number | null>((resolve) => client.on("exit", resolve))
    await waitFor(() => remoteProcesses(marker).some((p) => p.user === server.user))
    const before = server.listenerPids()

    await server.restart()

    expect(await exited).toBe(255)
    expect(remoteProcesses(marker).filter((p) => p.user === server.user)).toEqual([])
    expect(server.listenerPids()).not.toEqual(before)
    expect(await ssh(server, "127.0.0.17", server.user, "echo back")).toBe("back")
  })

  it("dropConnections keeps listening", async () => {
    const marker = `sleep 4${Math.floor(Math.random() * 1e6)}`
    const client = spawn("ssh", sshArgs(server, server.host, server.user, marker), { stdio: "ignore" })
    const exited = new Promise<number | null>((resolve) => client.on("exit", resolve))
    await waitFor(() => remoteProcesses(marker).some((p) => p.user === server.user))
    const listeners = server.listenerPids()
    expect(server.sshdPids().length).toBeGreaterThan(listeners.length)

    await server.dropConnections()

    expect(await exited).toBe(255)
    expect(server.listenerPids()).toEqual(listeners)
    expect([...server.sshdPids()].sort()).toEqual([...listeners].sort())
    expect(await ssh(server, server.host, server.user, "echo still")).toBe("still")
  })

  it("stop leaves no sshd of this server", async () => {
    const listeners = server.listenerPids()
    await server.stop()
    expect(server.sshdPids()).toEqual([])
    expect(remoteProcesses(server.stateDir)).toEqual([])
    expect(listeners.length).toBe(2)
    expect(await server.isRunning()).toBe(false)
  })
})

const waitFor = async (check: () => boolean, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting")
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
