/**
 * Hostile strings through every operation that puts a caller's string into a command line or a
 * path: working directories (`rcd`), variables (`withEnv`, `env`), `remoteFileExists`, `upload` and
 * `download` paths on both sides, `rsyncUpload`/`rsyncDownload` paths, `sudoUser` and host strings.
 *
 * Two properties, over thousands of generated strings (quotes, `$()`, backticks, `;`, `&&`, `|`,
 * newlines, leading dashes, `~`, globs, unicode with emoji, right-to-left and combining marks,
 * long names up to NAME_MAX):
 *
 * - nothing runs that the caller did not write: every string may carry `$(touch <marker>)`,
 *   `` `touch <marker>` `` or `; touch <marker>`, and the marker must never appear;
 * - values arrive byte for byte: `printf %s "$VAR"` prints the value, `pwd` prints the `rcd`
 *   directory, uploaded files have exactly the names given (read back with node:fs, since the
 *   server is this machine), downloads and rsync copy exactly the files named.
 *
 * Batched to stay fast: one command checks a hundred variables, one directory holds many files,
 * commands run eight at a time.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, layer } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { SettingsError } from "../src/Errors.ts"
import { parseHostString } from "../src/internal/settings/hostString.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf } from "./support.ts"

const server = readServerFromEnv()
const thisFile = fileURLToPath(import.meta.url)
const host = `${server.user}@127.0.0.1:${server.port}`

/** An injected command would create this file (as the login user or, through sudo, as root). */
const marker = path.join(tmpdir(), `tbhostile-pwned-${process.pid}-${randomBytes(4).toString("hex")}`)

const uidOf = (name: string): number =>
  Number(
    fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${name}:`))?.split(":")[2]
  )
const loginUid = uidOf(server.user)

const made: Array<string> = []
/** A fresh directory on "the server" (this machine) that the login user owns. */
const remoteDir = (prefix: string): string => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(tmpdir(), prefix)))
  fs.chmodSync(dir, 0o755)
  fs.chownSync(dir, loginUid, loginUid)
  made.push(dir)
  return dir
}
const localDir = (prefix: string): string => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(tmpdir(), prefix)))
  made.push(dir)
  return dir
}

/** Generated inputs tried per operation, printed at the end (for RELIABILITY.md). */
const tried = new Map<string, number>()
const count = (what: string, n: number) => tried.set(what, (tried.get(what) ?? 0) + n)

afterAll(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
  const injected = fs.existsSync(marker)
  fs.rmSync(marker, { force: true })
  console.log(
    `hostile inputs tried per operation:\n${[...tried].map(([what, n]) => `  ${what}: ${n}`).join("\n")}`
  )
  if (injected) throw new Error(`an injected command ran: ${marker} was created`)
})

// -- generators ----------------------------------------------------------------------------------

const tokens = [
  "'",
  "\"",
  "$",
  "$(",
  ")",
  "`",
  "\\",
  "\\'",
  "\n",
  "\r\n",
  "\t",
  " ",
  ";",
  "&&",
  "||",
  "|",
  "&",
  ">",
  "<",
  "*",
  "?",
  "[a]",
  "[",
  "{a,b}",
  "!",
  "#",
  "~",
  "~root",
  "=",
  "%s",
  "-",
  "--",
  "-n",
  "-e",
  "--help",
  "$HOME",
  "${IFS}",
  "$'\\x41'",
  "é",
  "e\u0301",
  "n\u0303\u0323",
  "👍",
  "👨‍👩‍👧",
  "🏳️‍🌈",
  "中文",
  "שלום",
  "مرحبا",
  "\u202e",
  "\u200f",
  "\u00a0",
  "\ufeff",
  "\x01",
  "\x1b[31m",
  "\x7f",
  `$(touch ${marker})`,
  `\`touch ${marker}\``,
  `; touch ${marker}`,
  `&& touch ${marker}`,
  `| touch ${marker}`,
  `\ntouch ${marker}\n`,
  `'; touch ${marker}; '`,
  `"; touch ${marker}; "`,
  `' && touch ${marker} && '`
] as const

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/** No NUL (no command line or file name holds one) and no lone surrogate (no UTF-8 for it). */
const clean = (s: string): string => s.replaceAll("\0", "").replace(loneSurrogate, "\uFFFD")

const tokenArb = Arbitrary.schema(Schema.Union([Schema.Literals(tokens), Schema.String])).pipe(
  Arbitrary.map(clean)
)

/** A hostile string: tokens and random text, sometimes with a run of one token to make it long. */
const valueArb: Arbitrary.Arbitrary<string> = Arbitrary.array(tokenArb, { maxLength: 16 }).pipe(
  Arbitrary.flatMap((parts) =>
    Arbitrary.schema(Schema.Int).pipe(
      Arbitrary.map((n) => {
        const text = parts.join("")
        // One in ten is long: its first token repeated, a few hundred to a few thousand bytes.
        return Math.abs(n) % 10 === 0 ? text + (parts[0] ?? "x").repeat(50 + (Math.abs(n) % 400)) : text
      })
    )
  )
)

/** Cuts `s` to at most `max` UTF-8 bytes, at a code point boundary. */
const truncateBytes = (s: string, max: number): string => {
  let bytes = 0
  let out = ""
  for (const ch of s) {
    const n = Buffer.byteLength(ch)
    if (bytes + n > max) break
    bytes += n
    out += ch
  }
  return out
}

/** A file name from a hostile string: no `/`, not `.` or `..`, at most NAME_MAX (255) bytes. */
const fileName = (s: string): string => {
  let name = truncateBytes(s.replaceAll("/", "\u2215"), 255)
  if (name === "" || name === "." || name === "..") name = truncateBytes(`x${name}`, 255)
  return name
}

/** Hand-picked names: option-like, home-like, glob-like, and as long as a name may be. */
const fixedNames: ReadonlyArray<string> = [
  "-",
  "--",
  "-rf",
  "--help",
  "~",
  "~root",
  "~x",
  "*",
  "?",
  "[a]",
  "a",
  " ",
  " leading and trailing ",
  "\n",
  "new\nline",
  "'",
  "\"",
  "\\",
  `$(touch ${marker.replaceAll("/", "_")})`,
  "x".repeat(255),
  "é".repeat(127),
  "👍".repeat(63),
  "x".repeat(234),
  "e\u0301".repeat(85)
]

/** Unique names of a batch (the file system is byte-exact, so equal strings would collide). */
const uniqueNames = (values: ReadonlyArray<string>): Array<string> => [...new Set(values.map(fileName))]

const batch = (min: number, max: number) => Arbitrary.array(valueArb, { minLength: min, maxLength: max })

const show = (s: string): string => {
  const json = JSON.stringify(s)
  return json.length > 160 ? `${json.slice(0, 160)}... (${Buffer.byteLength(s)} bytes)` : json
}

const assertNoInjection = () =>
  assert.isFalse(fs.existsSync(marker), `an injected command ran: ${marker} exists`)

const sameNames = (dir: string, expected: ReadonlyArray<string>) => {
  const got = fs.readdirSync(dir, { encoding: "buffer" }).map((b) => b.toString("hex")).sort()
  const want = expected.map((n) => Buffer.from(n).toString("hex")).sort()
  assert.deepStrictEqual(got, want, `names in ${dir}`)
}

const concurrency = { concurrency: 8 } as const
/**
 * Transfers through sudo hold an SFTP session while they run a command, two of the connection's
 * `maxChannels` (8) slots: more than 4 at once can take every slot for sessions and wait forever
 * for a command's (see the deadlock test in test/Soak.test.ts).
 */
const transferConcurrency = { concurrency: 4 } as const

// -- the tests -------------------------------------------------------------------------------------

const base = Settings.layer({
  host,
  keyFile: server.keyPath,
  knownHostsFile: server.knownHostsPath,
  hostKeyPolicy: "strict",
  sshConfigFile: false,
  useAgent: false,
  quiet: true,
  connectRetryDelay: "200 millis"
})

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "120 seconds",
  excludeTestServices: true
})(
  "hostile input",
  (it) => {
    describe("variables", () => {
      /**
       * A command line travels as one argument of `bash -c` (and of sudo's), which Linux limits to
       * 128 KiB: values go in commands of at most 25 KB of them (quoting can make that 100 KB).
       */
      const checkEnv = (values: ReadonlyArray<string>, how: "withEnv" | "env option" | "through sudo") => {
        const chunks: Array<Array<string>> = [[]]
        let size = 0
        for (const value of values) {
          if (size + Buffer.byteLength(value) > 25_000 && chunks.at(-1)!.length > 0) {
            chunks.push([])
            size = 0
          }
          chunks.at(-1)!.push(value)
          size += Buffer.byteLength(value)
        }
        return Effect.forEach(chunks, (chunk) => checkEnvChunk(chunk, how), { discard: true })
      }

      /** One command prints every variable, each followed by a NUL; checked one by one. */
      const checkEnvChunk = (values: ReadonlyArray<string>, how: "withEnv" | "env option" | "through sudo") =>
        Effect.gen(function*() {
          const vars = Object.fromEntries(values.map((v, i) => [`TB_V${i}`, v]))
          const command = values.map((_, i) => `printf '%s\\0' "$TB_V${i}"`).join("; ")
          const result = yield* (how === "withEnv"
            ? Operations.remote(command).pipe(Settings.withEnv(vars))
            : how === "env option"
            ? Operations.remote(command, { env: vars })
            : Operations.remoteSudo(command, { env: vars, sudoUser: server.otherUser }))
          const got = result.stdout.split("\0")
          assert.strictEqual(got.pop(), "", "output ends with a separator")
          for (let i = 0; i < values.length; i++) {
            if (got[i] !== values[i]) {
              assert.fail(`${how}: value ${i} ${show(values[i]!)} arrived as ${show(got[i] ?? "<nothing>")}`)
            }
          }
          assert.strictEqual(got.length, values.length)
          count(`env values (${how})`, values.length)
        })

      it.effect.prop(
        "values arrive byte for byte through withEnv, the env option and sudo, and nothing else runs",
        [batch(80, 120), batch(80, 120), batch(80, 120)],
        ([a, b, c]) =>
          Effect.gen(function*() {
            yield* Effect.all([
              checkEnv(a, "withEnv"),
              checkEnv(b, "env option"),
              checkEnv(c, "through sudo")
            ], {
              concurrency: 3
            })
            assertNoInjection()
          }),
        { arbitrary: { runs: 8, maxShrinks: 10 } }
      )

      it.effect("long and hand-picked values", () =>
        Effect.gen(function*() {
          yield* checkEnv(
            [...fixedNames, "x".repeat(20_000), "👍".repeat(5_000), tokens.join("").repeat(20)],
            "withEnv"
          )
          assertNoInjection()
        }))
    })

    describe("working directories (rcd)", () => {
      const checkDirs = (names: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const root = remoteDir("tbhostile-rcd-")
          for (const name of names) fs.mkdirSync(path.join(root, name))
          // Nested: a hostile directory inside another.
          const nested = names.length > 1 ? [path.join(names[0]!, names[1]!)] : []
          for (const dir of nested) fs.mkdirSync(path.join(root, dir), { recursive: true })
          yield* Effect.forEach([...names, ...nested], (name) =>
            Effect.gen(function*() {
              const expected = `${path.join(root, name)}\n`
              // relative to an outer rcd (but `~` alone is the home directory), and absolute
              if (name !== "~") {
                const relative = yield* Operations.remote("pwd").pipe(Settings.rcd(name), Settings.rcd(root))
                assert.strictEqual(relative.stdout, expected, `rcd(${show(name)}) inside rcd(root)`)
              }
              const absolute = yield* Operations.remote("pwd").pipe(Settings.rcd(path.join(root, name)))
              assert.strictEqual(absolute.stdout, expected, `rcd(root/${show(name)})`)
            }), { ...concurrency, discard: true })
          count("rcd (relative and absolute)", names.length + nested.length)
          assertNoInjection()
        })

      it.effect.prop(
        "pwd in any rcd directory is exactly that directory, and nothing else runs",
        [batch(30, 50)],
        ([values]) => checkDirs(uniqueNames(values)),
        { arbitrary: { runs: 6, maxShrinks: 10 } }
      )

      it.effect("hand-picked names", () => checkDirs(uniqueNames(fixedNames)))
    })

    describe("remoteFileExists", () => {
      const checkExists = (names: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const root = remoteDir("tbhostile-exists-")
          for (const name of names) fs.writeFileSync(path.join(root, name), "")
          yield* Effect.forEach(names, (name) =>
            Effect.gen(function*() {
              const file = path.join(root, name)
              assert.isTrue(yield* Operations.remoteFileExists(file), `exists: ${show(name)}`)
              // A glob character would match the file itself if the path were not quoted.
              const missing = `${file}*`
              assert.strictEqual(
                yield* Operations.remoteFileExists(missing),
                fs.existsSync(missing),
                show(missing)
              )
            }), { ...concurrency, discard: true })
          count("remoteFileExists", names.length * 2)
          assertNoInjection()
        })

      it.effect.prop(
        "a path exists exactly when it does, and nothing else runs",
        [batch(40, 60)],
        ([values]) => checkExists(uniqueNames(values)),
        { arbitrary: { runs: 5, maxShrinks: 10 } }
      )

      it.effect("hand-picked names", () => checkExists(uniqueNames(fixedNames)))
    })

    describe("upload and download", () => {
      const content = (name: string) => `content of ${name}\n`

      const checkTransfers = (names: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const remote = remoteDir("tbhostile-up-")
          const asSudo = remoteDir("tbhostile-upsudo-")
          const inRcd = remoteDir("tbhostile-uprcd-")
          const intoDir = remoteDir("tbhostile-upinto-")
          const local = localDir("tbhostile-local-")
          const down = localDir("tbhostile-down-")
          const downInto = localDir("tbhostile-downinto-")
          for (const name of names) fs.writeFileSync(path.join(local, name), content(name))
          yield* Effect.forEach(names, (name) =>
            Effect.gen(function*() {
              // remote paths: absolute, through sudo, relative to rcd, a directory receiving a local file
              yield* Transfer.upload({ content: content(name) }, path.join(remote, name))
              yield* Transfer.upload({ content: content(name) }, path.join(asSudo, name), { useSudo: true })
              if (name !== "~") {
                yield* Transfer.upload({ content: content(name) }, name).pipe(Settings.rcd(inRcd))
              }
              yield* Transfer.upload(path.join(local, name), `${intoDir}/`)
              // downloads: to memory, to a local path, into a local directory, through sudo
              const bytes = yield* Transfer.download(path.join(remote, name))
              assert.strictEqual(Buffer.from(bytes).toString(), content(name), `download of ${show(name)}`)
              yield* Transfer.download(path.join(remote, name), path.join(down, name))
              yield* Transfer.download(path.join(asSudo, name), `${downInto}/`, { useSudo: true })
            }), { ...transferConcurrency, discard: true })
          for (const dir of [remote, asSudo, intoDir, down, downInto]) {
            sameNames(dir, names)
            for (const name of names) {
              assert.strictEqual(
                fs.readFileSync(path.join(dir, name), "utf8"),
                content(name),
                `${dir}/${show(name)}`
              )
            }
          }
          sameNames(inRcd, names.filter((n) => n !== "~"))
          count("upload (absolute, sudo, rcd-relative, into a directory)", names.length)
          count("download (memory, local path, into a directory through sudo)", names.length)
          assertNoInjection()
        })

      it.effect.prop(
        "files arrive under exactly the names given, with their content, and nothing else runs",
        [batch(25, 40)],
        ([values]) => checkTransfers(uniqueNames(values)),
        { arbitrary: { runs: 5, maxShrinks: 10 } }
      )

      it.effect("hand-picked names, up to NAME_MAX bytes", () => checkTransfers(uniqueNames(fixedNames)))
    })

    describe("rsync", () => {
      /** One directory of hostile names to a hostile remote directory and back to a hostile local one. */
      const checkRsync = (dirName: string, names: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const local = localDir("tbhostile-rsync-src-")
          const remote = remoteDir("tbhostile-rsync-dst-")
          const back = localDir("tbhostile-rsync-back-")
          const source = path.join(local, dirName)
          fs.mkdirSync(source)
          for (const name of names) fs.writeFileSync(path.join(source, name), `rsync ${name}`)
          // A sibling that a glob in the remote path would also match.
          fs.mkdirSync(path.join(remote, `${dirName}-sibling`))
          fs.writeFileSync(path.join(remote, `${dirName}-sibling`, "not-this"), "")
          const remoteTarget = path.join(remote, dirName)
          yield* Transfer.rsyncUpload(`${source}/`, `${remoteTarget}/`)
          sameNames(remoteTarget, names)
          yield* Transfer.rsyncDownload(`${remoteTarget}/`, `${path.join(back, dirName)}/`)
          sameNames(path.join(back, dirName), names)
          for (const name of names) {
            assert.strictEqual(fs.readFileSync(path.join(back, dirName, name), "utf8"), `rsync ${name}`)
          }
          count("rsyncUpload/rsyncDownload directory names", 1)
          count("rsyncUpload/rsyncDownload file names", names.length)
          assertNoInjection()
        })

      it.effect.prop(
        "rsync copies exactly the files named, to and from any directory name, and nothing else runs",
        [valueArb, batch(20, 40)],
        // Bytes, not UTF-16 units, count toward NAME_MAX, and the sibling adds "-sibling" to the name.
        ([dirName, values]) =>
          checkRsync(truncateBytes(fileName(dirName), 255 - "-sibling".length), uniqueNames(values)),
        { arbitrary: { runs: 12, maxShrinks: 10 } }
      )

      it.effect("hand-picked directory names", () =>
        Effect.forEach(
          [
            "-rf",
            "*",
            "[a]",
            "~x",
            "a b",
            "$(touch x)",
            "new\nline",
            "new\nline*",
            "\uFFFD\n-1*",
            "é👍",
            "back\\slash",
            "a\\*[b]?",
            // the longest name that leaves room for "-sibling", in four-byte characters and joiners
            truncateBytes("\u{1F468}\u200D\u{1F469}\u200D\u{1F467}".repeat(20), 255 - "-sibling".length)
          ],
          (dirName) => checkRsync(dirName, uniqueNames(fixedNames)),
          { discard: true }
        ))
    })

    describe("sudoUser", () => {
      it.effect("existing users: commands run as them", () =>
        Effect.forEach(
          ["root", server.user, ...(server.otherUser === undefined ? [] : [server.otherUser])],
          (user) =>
            Effect.gen(function*() {
              const result = yield* Operations.remoteSudo("id -un", { sudoUser: user })
              assert.strictEqual(result.stdout, `${user}\n`)
            }),
          { discard: true }
        ))

      it.effect.prop(
        "a hostile sudoUser is refused (early, or by sudo), and nothing else runs",
        [batch(40, 60)],
        ([values]) =>
          Effect.gen(function*() {
            yield* Effect.forEach(values, (user) =>
              Effect.gen(function*() {
                const exit = yield* Effect.exit(Operations.remoteSudo("id -un", { sudoUser: user }))
                const error = failureOf(exit)
                if (error instanceof SettingsError) {
                  assert.strictEqual(error.setting, "sudoUser")
                } else {
                  assert.strictEqual(error._tag, "CommandFailed", `${show(user)}: ${String(error)}`)
                  if (error._tag === "CommandFailed") {
                    assert.match(error.result.stdout, /unknown user|sudo:/, `sudo refused ${show(user)}`)
                  }
                }
              }), { ...concurrency, discard: true })
            count("sudoUser (invalid)", values.length)
            assertNoInjection()
          }),
        { arbitrary: { runs: 5, maxShrinks: 10 } }
      )
    })

    describe("host strings", () => {
      const allowed = /^[A-Za-z0-9_.@:[\]%-]+$/

      it.effect.prop(
        "a host string with anything but host characters is refused before connecting, and nothing runs",
        [batch(150, 200)],
        ([values]) =>
          Effect.gen(function*() {
            for (const value of values) {
              const parsed = parseHostString(value)
              if (Result.isSuccess(parsed)) {
                // Whatever is accepted is made of host characters only, with no option-like part.
                const { user, host: name, port } = parsed.success
                assert.match(value.trim(), allowed, `accepted ${show(value)}`)
                assert.notMatch(name, /^-/)
                if (user !== undefined) assert.notMatch(user, /^[-@]/)
                if (port !== undefined) assert.isTrue(Number.isInteger(port) && port >= 1 && port <= 65535)
              } else {
                assert.instanceOf(parsed.failure, SettingsError)
              }
            }
            // Through the operations: refused as a setting, never a connection or a command.
            const refused = values.filter((v) => !allowed.test(v.trim()))
            yield* Effect.forEach(refused, (value) =>
              Effect.gen(function*() {
                const ops: ReadonlyArray<
                  Effect.Effect<unknown, unknown, Ssh.SshConnections | NodeServices.NodeServices>
                > = [
                  Operations.remote(`touch ${marker}`, { host: value }),
                  Operations.remoteFileExists(marker, { host: value }),
                  Transfer.upload({ content: "x" }, marker, { host: value }),
                  Transfer.rsyncUpload(thisFile, marker, { host: value })
                ]
                for (const op of ops) {
                  const error = failureOf(yield* Effect.exit(op))
                  assert.instanceOf(error, SettingsError, `${show(value)}: ${String(error)}`)
                }
              }), { ...concurrency, discard: true })
            count("host strings (parsed)", values.length)
            count("host strings (through remote, remoteFileExists, upload, rsyncUpload)", refused.length)
            assertNoInjection()
          }),
        { arbitrary: { runs: 20, maxShrinks: 10 } }
      )
    })
  }
)
