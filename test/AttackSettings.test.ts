/**
 * Attacks on settings and the command envelope (issue 10): the ssh_config cache of a layer, the
 * one rule by which options become settings (rsync's `useSudo` included), local commands stopped
 * by a time limit, and rsync destinations holding patterns. A test whose name starts with
 * Each names the promise it attacks; those that once broke it are fixed.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { CommandTimeout } from "../src/Errors.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { failureOf, settingsLayer, signal, uid, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()
const base = settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true })
const scratch = (prefix: string) => fs.mkdtempSync(path.join(tmpdir(), prefix))

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "300 seconds",
  excludeTestServices: true
})(
  "AttackSettings",
  (it) => {
    describe("ssh_config, read again when the file changes", () => {
      it.effect("an in-place edit of the same size, 40 times in a row, is seen every time", () =>
        Effect.gen(function*() {
          const dir = scratch("tb-attack-config-")
          const file = path.join(dir, "config")
          const ssh = yield* Ssh.SshConnections
          const current = yield* Settings.Settings
          const settings = Settings.apply(current, { host: "alias", sshConfigFile: file })
          let stale = 0
          const rounds = 40
          for (let i = 0; i < rounds; i++) {
            // Same length, same inode (written in place), as an editor or a tool rewriting a name does.
            const name = `h${i % 2}.example`
            fs.writeFileSync(file, `Host alias\n  HostName ${name}\n`)
            const target = yield* ssh.resolve(settings)
            if (target.host !== name) stale++
          }
          fs.rmSync(dir, { recursive: true, force: true })
          assert.strictEqual(stale, 0, `${stale} of ${rounds} resolves saw the previous file`)
        }))

      it.effect("an edit whose mtime is put back (rsync -t, tar, cp -p, touch -r) is seen", () =>
        Effect.gen(function*() {
          const dir = scratch("tb-attack-config-")
          const file = path.join(dir, "config")
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, { host: "alias", sshConfigFile: file })
          fs.writeFileSync(file, "Host alias\n  HostName h1.example\n")
          // `touch -r` copies the stamp to the nanosecond, as rsync -t, tar and cp -p do.
          execFileSync("touch", ["-r", file, `${file}.stamp`])
          const first = yield* ssh.resolve(settings)
          fs.writeFileSync(file, "Host alias\n  HostName h2.example\n")
          execFileSync("touch", ["-r", `${file}.stamp`, file])
          const second = yield* ssh.resolve(settings)
          fs.rmSync(dir, { recursive: true, force: true })
          assert.strictEqual(first.host, "h1.example")
          assert.strictEqual(second.host, "h2.example", "the edited file was not read again")
        }))

      it.effect("a file replaced by a rename (new inode) is seen at once", () =>
        Effect.gen(function*() {
          const dir = scratch("tb-attack-config-")
          const file = path.join(dir, "config")
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, { host: "alias", sshConfigFile: file })
          let stale = 0
          for (let i = 0; i < 20; i++) {
            const name = `h${i % 2}.example`
            fs.writeFileSync(`${file}.new`, `Host alias\n  HostName ${name}\n`)
            fs.renameSync(`${file}.new`, file)
            if ((yield* ssh.resolve(settings)).host !== name) stale++
          }
          fs.rmSync(dir, { recursive: true, force: true })
          assert.strictEqual(stale, 0)
        }))
    })

    describe("options become settings by one rule", () => {
      it.effect("undefined options leave settings; the cwd and shell aliases work beside undefined names", () =>
        Effect.gen(function*() {
          const dir = scratch("tb-attack-opts-")
          const result = yield* Operations.local("pwd; echo $BASH", {
            capture: true,
            cwd: dir,
            localWorkingDir: undefined,
            shell: "/bin/bash -c",
            localShell: undefined,
            env: undefined,
            timeout: undefined
          })
          fs.rmSync(dir, { recursive: true, force: true })
          assert.strictEqual(
            result.stdoutLines[0],
            fs.realpathSync(tmpdir()) === tmpdir() ? dir : result.stdoutLines[0]
          )
          assert.strictEqual(result.stdoutLines[1], "/bin/bash")
        }))

      it.effect(
        "rsyncUpload uses sudo under the useSudo setting as under the option",
        () =>
          Effect.gen(function*() {
            if (!server.isRoot) return
            const local = scratch("tb-attack-rsync-local-")
            fs.writeFileSync(path.join(local, "f"), "x")
            // A directory only root may write in.
            const rootDir = scratch("tb-attack-rsync-root-")
            fs.chmodSync(rootDir, 0o755)
            const host = "127.0.0.8"
            const byOption = yield* Effect.exit(
              Transfer.rsyncUpload(path.join(local, "f"), `${rootDir}/opt/`, { useSudo: true }).pipe(
                Settings.settings({ host })
              )
            )
            const bySetting = yield* Effect.exit(
              Transfer.rsyncUpload(path.join(local, "f"), `${rootDir}/set/`).pipe(
                Settings.settings({ host, useSudo: true })
              )
            )
            const landed = [fs.existsSync(`${rootDir}/opt/f`), fs.existsSync(`${rootDir}/set/f`)]
            fs.rmSync(local, { recursive: true, force: true })
            fs.rmSync(rootDir, { recursive: true, force: true })
            assert.isTrue(Exit.isSuccess(byOption), String(byOption))
            assert.isTrue(
              Exit.isSuccess(bySetting),
              `the setting was ignored: ${String(bySetting).slice(0, 300)}`
            )
            assert.deepStrictEqual(landed, [true, true])
          })
      )
    })

    describe("rsync destinations with patterns", () => {
      it.effect("into a/[x]*?\\ dir beside a matching one: lands exactly there", () =>
        Effect.gen(function*() {
          const owner = uid(server.user)
          const local = scratch("tb-attack-rsg-local-")
          fs.writeFileSync(path.join(local, "f"), "payload")
          const remote = scratch("tb-attack-rsg-remote-")
          if (owner >= 0) fs.chownSync(remote, owner, owner)
          // A decoy every pattern below would match.
          fs.mkdirSync(path.join(remote, "ab-x-1"))
          if (owner >= 0) fs.chownSync(path.join(remote, "ab-x-1"), owner, owner)
          const name = "a[b]-?-*\\"
          const exit = yield* Effect.exit(
            Transfer.rsyncUpload(path.join(local, "f"), `${remote}/${name}/`).pipe(
              Settings.settings({ host: "127.0.0.8" })
            )
          )
          const exact = fs.existsSync(path.join(remote, name, "f"))
          const decoy = fs.readdirSync(path.join(remote, "ab-x-1"))
          fs.rmSync(local, { recursive: true, force: true })
          fs.rmSync(remote, { recursive: true, force: true })
          assert.isTrue(Exit.isSuccess(exit), String(exit))
          assert.isTrue(exact)
          assert.deepStrictEqual(decoy, [])
        }))
    })

    describe("the envelope stops local commands", () => {
      it.effect("local timeout: a child that left the process group (setsid) is stopped too", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("attack_local_setsid")
          const exit = yield* Effect.exit(
            Operations.local(`setsid sh -c 'sleep 30; echo ${marker}' & sh -c 'sleep 30; echo ${marker}'`, {
              timeout: "500 millis"
            })
          )
          const error = failureOf(exit)
          const gone = yield* waitForProcesses(marker, false, 5)
          const left = remoteProcesses(marker)
          for (const p of left) signal(p.pid, "SIGKILL")
          assert.instanceOf(error, CommandTimeout)
          assert.isTrue(gone, `left running: ${left.map((p) => `${p.pid} ${p.args}`).join(" | ")}`)
        }))
    })
  }
)
