/**
 * Turns a command and the settings into what is run: shell wrapping, working directory,
 * environment variables and sudo, with every user-supplied string quoted for a POSIX shell.
 *
 * Local and remote commands both come through here, so they quote alike.
 */
import * as Result from "effect/Result"
import { SettingsError } from "../../Errors.ts"

// Words made only of these characters mean the same to a shell quoted or not.
const safeWord = /^[A-Za-z0-9_@%+=:,./-]+$/
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/

/**
 * Quotes one word for a POSIX shell: the shell reads it back as exactly `word`, whatever bytes
 * it holds. Single quotes keep everything literal; a single quote inside becomes `'\''`.
 */
export const quote = (word: string): string => {
  if (word === "") return "''"
  if (safeWord.test(word)) return word
  return `'${word.replaceAll("'", `'\\''`)}'`
}

/** Quotes each word and joins them with spaces. */
export const join = (words: ReadonlyArray<string>): string => words.map(quote).join(" ")

/**
 * Quotes a directory for `cd`, keeping a leading `~` or `~/` unquoted so the shell still
 * expands it to the home directory, and anchoring a relative one at the current directory.
 */
export const quoteDir = (dir: string): string => {
  if (dir === "~") return "~"
  if (dir.startsWith("~/")) return dir.length === 2 ? "~/" : `~/${quote(dir.slice(2))}`
  // A relative name gets `./`: `cd` would otherwise search CDPATH (and print where it went)
  // and read a lone `-` as "the previous directory".
  return quote(dir.startsWith("/") ? dir : `./${dir}`)
}

/** Splits a trusted shell setting such as `/bin/bash -l -c` into its words. */
export const splitShell = (shell: string): ReadonlyArray<string> => shell.trim().split(/\s+/)

/**
 * Hosts without bash (busybox systems such as Alpine, many routers and containers): a `shell`
 * whose program is `/bin/bash` (the default is `/bin/bash -c`) runs as `/bin/sh` with the same
 * options where `/bin/bash` cannot be run. The check goes in front of each command rather than
 * being asked once per connection: `[ -x ]` is a builtin (one `stat`, microseconds), costs no
 * round trip, and cannot be wrong about a host whose bash appeared or went since the connection
 * opened. The line then names the program through {@link fallbackProgram}.
 */
export const fallsBackToSh = (shell: string): boolean => splitShell(shell)[0] === "/bin/bash"

/** The variable that holds the shell's program, set by {@link fallbackCheck}. */
export const fallbackProgram = `"$tb_sh"`

/** Shell text, POSIX and run by the login shell, that picks the program for {@link fallbackProgram}. */
export const fallbackCheck = "tb_sh=/bin/bash; [ -x /bin/bash ] || tb_sh=/bin/sh; "

/** What {@link build} needs to know. */
export interface CommandSpec {
  /** A command line (shell text, run as written) or an argument list (every word quoted). */
  readonly command: string | ReadonlyArray<string>
  /** Wrap in `shell`; otherwise a string command is handed to the remote login shell as is. */
  readonly useShell: boolean
  /** The shell as a trusted command line ending in `-c`, e.g. `/bin/bash -l -c`. */
  readonly shell: string
  /**
   * Shell text that stands for the shell's program in `line` (the argument vector keeps the
   * real one): {@link fallbackProgram}, for a line sent after {@link fallbackCheck}.
   */
  readonly shellProgram?: string | undefined
  readonly useSudo: boolean
  readonly sudoUser: string | undefined
  /**
   * When set, sudo reads its password from standard input and shows this prompt, so the caller
   * can answer it; otherwise sudo runs non-interactively (`-n`) and fails if it needs one.
   */
  readonly sudoPrompt: string | undefined
  /**
   * Shell text that `/bin/sh` runs right after sudo has switched users and before the command,
   * which it then `exec`s in its own place (so the command keeps that process). Only with sudo.
   */
  readonly sudoPrelude?: string | undefined
  /**
   * A file descriptor that sudo (and what it runs) takes as its standard input, instead of the
   * shell's own: the caller keeps the real input there and gives everything else `/dev/null`.
   */
  readonly sudoInputFd?: number | undefined
  /** A directory to `cd` into first, or `undefined`. */
  readonly cwd: string | undefined
  readonly env: Readonly<Record<string, string>>
}

/** A command ready to run. */
export interface BuiltCommand {
  /** The command as the caller wrote it, for messages (an argument list is quoted and joined). */
  readonly display: string
  /** One command line for a shell: what is sent over SSH, and what `realCommand` shows. */
  readonly line: string
  /**
   * The same as an argument vector for a local spawn. It does not include the working
   * directory when `cwdInArgv` is false: the caller sets the process's cwd instead.
   */
  readonly argv: ReadonlyArray<string>
  /** Whether `argv` already changes to `cwd` (shell wrapping); if not, spawn it in `cwd`. */
  readonly cwdInArgv: boolean
  /**
   * With a shell and no sudo: the script handed to the shell, for a caller that already runs in
   * that very shell and can skip starting it again. `undefined` otherwise.
   */
  readonly script?: string | undefined
}

const sudoWords = (spec: CommandSpec): ReadonlyArray<string> => {
  if (!spec.useSudo) return []
  const fd = spec.sudoInputFd
  const words = fd === undefined ? ["sudo"] : ["/bin/sh", "-c", `exec sudo "$@" <&${fd} ${fd}<&-`, "sh"]
  if (spec.sudoPrompt === undefined) words.push("-n")
  else words.push("-S", "-p", spec.sudoPrompt)
  if (spec.sudoUser !== undefined) words.push("-u", spec.sudoUser)
  words.push("--")
  if (spec.sudoPrelude !== undefined) words.push("/bin/sh", "-c", `${spec.sudoPrelude}; exec "$@"`, "sh")
  return words
}

const nul = (setting: string, value: string): SettingsError =>
  new SettingsError({
    setting,
    value: value.replaceAll("\0", "\\0"),
    detail: "contains a NUL byte, which no command line can carry"
  })

const validate = (spec: CommandSpec): SettingsError | undefined => {
  const words = typeof spec.command === "string" ? [spec.command] : spec.command
  const badWord = words.find((word) => word.includes("\0"))
  if (badWord !== undefined) return nul("command", badWord)
  for (const [name, value] of Object.entries(spec.env)) {
    if (value.includes("\0")) return nul(`env.${name}`, value)
  }
  if (spec.cwd?.includes("\0")) return nul("remoteWorkingDir", spec.cwd)
  if (spec.sudoUser?.includes("\0")) return nul("sudoUser", spec.sudoUser)
  for (const name of Object.keys(spec.env)) {
    if (!envName.test(name)) {
      return new SettingsError({
        setting: "env",
        value: name,
        detail: "a variable name must be letters, digits and underscores, not starting with a digit"
      })
    }
  }
  if (spec.sudoUser !== undefined && (spec.sudoUser === "" || spec.sudoUser.startsWith("-"))) {
    return new SettingsError({
      setting: "sudoUser",
      value: spec.sudoUser,
      detail: "not a user name; give the user to run as, or leave sudoUser unset for root"
    })
  }
  if (typeof spec.command !== "string" && spec.command.length === 0) {
    return new SettingsError({ setting: "command", value: "", detail: "an argument list needs a program" })
  }
  if (spec.cwd === "") {
    return new SettingsError({
      setting: "remoteWorkingDir",
      value: "",
      detail: "an empty directory name; give a directory, or leave it unset for the login directory"
    })
  }
  return undefined
}

/**
 * Builds the command line and argument vector for a command under the given settings.
 *
 * With a shell: `[sudo ...] /bin/bash -l -c '<cd dir && export K=v && command>'`. The `cd`
 * and `export` go inside the shell so that they apply after sudo has switched users (sudo
 * resets the environment). Without a shell, an argument list runs directly (variables through
 * `env`), and a string command is passed on as written.
 */
export const build = (spec: CommandSpec): Result.Result<BuiltCommand, SettingsError> => {
  const invalid = validate(spec)
  if (invalid !== undefined) return Result.fail(invalid)

  const display = typeof spec.command === "string" ? spec.command : join(spec.command)
  const sudo = sudoWords(spec)
  const envEntries = Object.entries(spec.env)
  const prelude: Array<string> = []
  if (spec.cwd !== undefined) prelude.push(`cd -- ${quoteDir(spec.cwd)}`)
  if (envEntries.length > 0) {
    prelude.push(`export ${envEntries.map(([k, v]) => `${k}=${quote(v)}`).join(" ")}`)
  }

  if (spec.useShell) {
    const script = [...prelude, display].join(" && ")
    const shell = splitShell(spec.shell)
    const argv = [...sudo, ...shell, script]
    const shellText = spec.shellProgram === undefined
      ? spec.shell.trim()
      : [spec.shellProgram, ...shell.slice(1)].join(" ")
    return Result.succeed({
      display,
      line: [join(sudo), shellText, quote(script)].filter((s) => s !== "").join(" "),
      argv,
      cwdInArgv: true,
      script: sudo.length === 0 ? script : undefined
    })
  }

  // No shell of ours. An argument list runs as given; variables go through env(1) so that
  // they survive sudo. Remotely the server's login shell still reads `line`.
  if (typeof spec.command !== "string") {
    const envWords = envEntries.length > 0 ? ["env", ...envEntries.map(([k, v]) => `${k}=${v}`)] : []
    const argv = [...sudo, ...envWords, ...spec.command]
    const line = [...(spec.cwd !== undefined ? [`cd -- ${quoteDir(spec.cwd)}`] : []), join(argv)].join(" && ")
    return Result.succeed({ display, line, argv, cwdInArgv: false })
  }
  const commandPart = sudo.length > 0 ? `${join(sudo)} ${spec.command}` : spec.command
  const line = [...prelude, commandPart].join(" && ")
  return Result.succeed({ display, line, argv: ["/bin/sh", "-c", line], cwdInArgv: true })
}
