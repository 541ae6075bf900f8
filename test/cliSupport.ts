/**
 * What the tests of the `threadbare` command share: running a program to its end, building the
 * package into a consumer project in /tmp (as a user's project would install it, with the
 * checkout's own dist/ left alone), and the command's connection flags for the throwaway server.
 */
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type { ServerDescription } from "../tests-remote/server.ts"

export const root = path.resolve(import.meta.dirname, "..")

/** The project's TypeScript compiler, to build the package as `npm run build` does. */
export const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")

export interface Ran {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a program to its end and gives its exit status and output. It is killed with SIGKILL after
 * `millis` (default 90 s), so a hang shows as that signal rather than as a stuck test.
 */
export const exec = (
  file: string,
  args: ReadonlyArray<string>,
  cwd: string,
  options: { readonly env?: Readonly<Record<string, string>>; readonly millis?: number } = {}
): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd,
      // `#!/usr/bin/env node` finds this Node first, as on a machine with a recent Node.
      env: {
        ...process.env,
        ...options.env,
        PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ""}`
      },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: options.millis ?? 90_000,
      killSignal: "SIGKILL"
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

export const sha256 = (file: string): string =>
  createHash("sha256").update(fs.readFileSync(file)).digest("hex")

/** Builds the package (tsconfig.build.json) into `outDir`; fails with the compiler's output. */
export const buildPackage = async (outDir: string): Promise<void> => {
  const built = await exec(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", outDir], root)
  if (built.code !== 0) throw new Error(`the package does not build: ${built.stdout}${built.stderr}`)
}

/**
 * A consumer project at `<work>/consumer` with the package built into its node_modules (every
 * other installed package symlinked from the checkout's) and the test tasks as its `tasks.ts`.
 * Returns the project and the command's built script.
 */
export const makeConsumer = async (
  work: string
): Promise<{ readonly project: string; readonly bin: string }> => {
  const project = path.join(work, "consumer")
  const modules = path.join(project, "node_modules")
  const pkg = path.join(modules, "effect-threadbare")
  fs.mkdirSync(modules, { recursive: true })
  const installed = path.join(root, "node_modules")
  for (const name of fs.readdirSync(installed)) {
    if (name.startsWith(".") || name === "effect-threadbare") continue
    fs.symlinkSync(path.join(installed, name), path.join(modules, name))
  }
  await buildPackage(path.join(pkg, "dist"))
  fs.copyFileSync(path.join(root, "package.json"), path.join(pkg, "package.json"))
  fs.copyFileSync(path.join(root, "test", "fixtures", "cli-tasks.ts"), path.join(project, "tasks.ts"))
  fs.writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "consumer", type: "module" }))
  return { project, bin: path.join(pkg, "dist", "bin", "threadbare.js") }
}

/**
 * The command's flags for the throwaway server (its port, user, key and known_hosts, strict
 * checking, no agent, no ssh config), and the same with a port that refuses every connection, so
 * that a command that should touch no host would end with exit 3 if it tried.
 */
export const connectionFlags = (server: ServerDescription) => {
  const connection = [
    "--port",
    String(server.port),
    "--user",
    server.user,
    "--key",
    server.keyPath,
    "--known-hosts",
    server.knownHostsPath,
    "--host-key-policy",
    "strict",
    "--no-agent",
    "--ssh-config",
    "none"
  ]
  const refusing = [
    ...connection.map((arg) => (arg === String(server.port) ? "1" : arg)),
    "--connect-attempts",
    "1"
  ]
  return { connection, refusing }
}
