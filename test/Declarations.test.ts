/**
 * The published declarations stand on their own: a project that installs effect-threadbare, but
 * not `@types/ssh2` (a dev dependency here), type-checks with `skipLibCheck: false`. So no ssh2
 * type may appear in the public API (`Connection.sftp` gives the library's own `SftpSession`).
 *
 * The package is built with `tsconfig.build.json` into the `node_modules` of a tiny consumer
 * project in /tmp, whose other packages are symlinks to every installed package except ssh2 and
 * its types; nothing up the directory tree can supply them either.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)
const root = path.resolve(import.meta.dirname, "..")
const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")

const compile = (project: string) =>
  run(process.execPath, [tsc, "-p", project], { cwd: path.dirname(project), maxBuffer: 16 << 20 }).then(
    () => "",
    (error: { stdout?: string; stderr?: string }) =>
      `${error.stdout ?? ""}${error.stderr ?? ""}` || String(error)
  )

/** Symlinks every installed package but ssh2 and @types/ssh2 into `modules`. */
const linkPackages = (modules: string) => {
  const installed = path.join(root, "node_modules")
  for (const name of fs.readdirSync(installed)) {
    if (name.startsWith(".") || name === "ssh2") continue
    if (name.startsWith("@")) {
      fs.mkdirSync(path.join(modules, name), { recursive: true })
      for (const inner of fs.readdirSync(path.join(installed, name))) {
        if (`${name}/${inner}` === "@types/ssh2") continue
        fs.symlinkSync(path.join(installed, name, inner), path.join(modules, name, inner))
      }
    } else {
      fs.symlinkSync(path.join(installed, name), path.join(modules, name))
    }
  }
}

const consumer = `import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Errors, Settings, Ssh, Transfer } from "effect-threadbare"
import * as SshModule from "effect-threadbare/Ssh"

const program = Transfer.upload({ content: "x" }, "/tmp/x").pipe(
  Effect.andThen(Transfer.download("/etc/hosts")),
  Settings.settings({ host: "deploy@web-1" })
)
export const main: Effect.Effect<Uint8Array, Errors.TransferError | Errors.ConnectionError | Errors.SettingsError> =
  program.pipe(Effect.provide(Layer.mergeAll(Ssh.layer)))
export const sftpOf = (
  connection: SshModule.Connection
): Effect.Effect<number, Errors.ConnectionError | SshModule.SftpError, never> =>
  Effect.scoped(
    Effect.flatMap(connection.sftp, (session: SshModule.SftpSession) =>
      Effect.map(session.stat("/"), (stats) => stats.size))
  )
`

describe("published declarations", () => {
  it("type-check in a project with skipLibCheck false and no @types/ssh2", { timeout: 240_000 }, async () => {
    const work = fs.mkdtempSync(path.join(tmpdir(), "tbdecl-"))
    // Built into the temporary directory, not into the checkout's dist/; the configuration sits
    // in the checkout's ignored .tmp/, where the compiler finds @types/node.
    fs.mkdirSync(path.join(root, ".tmp"), { recursive: true })
    const buildDir = fs.mkdtempSync(path.join(root, ".tmp", "decl-"))
    try {
      const project = path.join(work, "consumer")
      const modules = path.join(project, "node_modules")
      const pkg = path.join(modules, "effect-threadbare")
      const dist = path.join(pkg, "dist")
      const buildConfig = path.join(buildDir, "tsconfig.build.json")
      fs.writeFileSync(
        buildConfig,
        JSON.stringify({
          extends: path.join(root, "tsconfig.build.json"),
          compilerOptions: {
            rootDir: path.join(root, "src"),
            outDir: dist,
            declarationMap: false,
            sourceMap: false
          },
          include: [path.join(root, "src")]
        })
      )
      assert.strictEqual(await compile(buildConfig), "", "the package itself builds")

      linkPackages(modules)
      fs.copyFileSync(path.join(root, "package.json"), path.join(pkg, "package.json"))
      fs.writeFileSync(path.join(project, "index.ts"), consumer)
      fs.writeFileSync(
        path.join(project, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2023",
            // effect's own crypto declarations name Web Crypto types (CryptoKey, JsonWebKey).
            lib: ["ES2023", "DOM"],
            module: "NodeNext",
            moduleResolution: "NodeNext",
            types: ["node"],
            strict: true,
            exactOptionalPropertyTypes: true,
            skipLibCheck: false,
            noEmit: true
          },
          files: ["index.ts"]
        })
      )
      assert.isFalse(fs.existsSync(path.join(modules, "@types", "ssh2")))
      const errors = await compile(path.join(project, "tsconfig.json"))
      assert.strictEqual(errors, "", "the consumer type-checks")
    } finally {
      fs.rmSync(work, { recursive: true, force: true })
      fs.rmSync(buildDir, { recursive: true, force: true })
    }
  })
})
