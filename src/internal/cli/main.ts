/**
 * The `threadbare` command: its tree of commands (ad-hoc, `put`, `get`, `run`), built with
 * `effect/cli`, and the program that runs it and turns its end into an exit status.
 *
 * `run` takes flags that only exist once its task is known, so the command is built in two
 * steps: the arguments are scanned for `run MODULE TASK`, the module is imported and the task's
 * input Schema becomes flags; then the whole command line is parsed, checked and run.
 */
import * as Argument from "effect/cli/Argument"
import * as CliError from "effect/cli/CliError"
import * as Command from "effect/cli/Command"
import * as Completions from "effect/cli/Completions"
import * as Flag from "effect/cli/Flag"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Stdio from "effect/Stdio"
import * as Adhoc from "./adhoc.ts"
import * as ExitCodes from "./exitCodes.ts"
import { type LoadedTask, loadTask, scanRun } from "./load.ts"
import { type Shared, sharedFlags } from "./options.ts"
import { HostsFailed, type Placement, runOnHosts } from "./run.ts"
import { decodeInput, type TaskFlags } from "./taskFlags.ts"

// The help prints the description as it is after two spaces: later lines carry their own indent.
const description = [
  "Run a command, move files, or run a typed task on many hosts over SSH.",
  "",
  "  Exit status (when hosts fail differently, the highest code):",
  ...ExitCodes.table.map(([code, meaning]) => `    ${code}  ${meaning}`),
  "",
  "  Shell completions: threadbare --completions bash|zsh|fish"
].join("\n")

const adhocPlacement = (shared: Shared): Placement =>
  Option.match(shared.parallel, {
    onNone: () => ({ mode: "serial" }),
    onSome: (n) => ({ mode: "fibers", poolSize: n })
  })

const base = Command.make("threadbare", {
  command: Argument.String("command").pipe(
    Argument.withDescription("the shell command to run on every host (after --)"),
    Argument.variadic()
  )
}).pipe(Command.withSharedFlags(sharedFlags))

const adhoc = base.pipe(
  Command.withHandler((input) =>
    Effect.gen(function*() {
      const command = input.command.join(" ").trim()
      if (command.length === 0) {
        return yield* new CliError.ShowHelp({ commandPath: ["threadbare"], errors: [] })
      }
      yield* runOnHosts({
        task: Adhoc.command,
        input: { command },
        shared: input,
        placement: adhocPlacement(input),
        describe: `run: ${command}`
      })
    })
  )
)

const put = Command.make("put", {
  local: Argument.String("local").pipe(Argument.withDescription("the local file or directory")),
  remote: Argument.String("remote").pipe(Argument.withDescription("where it goes on each host"))
}, ({ local, remote }) =>
  Effect.gen(function*() {
    const shared = yield* base
    yield* runOnHosts({
      task: Adhoc.put,
      input: { local, remote },
      shared,
      placement: adhocPlacement(shared),
      describe: `put ${local} -> ${remote}`
    })
  })).pipe(
    Command.withDescription("Upload a local file or directory to every host (--sudo for root-owned places).")
  )

const get = Command.make("get", {
  remote: Argument.String("remote").pipe(Argument.withDescription("the remote file")),
  local: Argument.String("local").pipe(
    Argument.withDescription(
      `the local path; ${Adhoc.hostPlaceholder} becomes each host's name (required for several hosts)`
    )
  )
}, ({ local, remote }) =>
  Effect.gen(function*() {
    const shared = yield* base
    yield* runOnHosts({
      task: Adhoc.get,
      input: { remote, local },
      shared,
      placement: adhocPlacement(shared),
      describe: `get ${remote} -> ${local}`,
      checkHosts: (hosts) => {
        if (hosts.length > 1 && !local.includes(Adhoc.hostPlaceholder)) {
          return `get: with several hosts, put ${Adhoc.hostPlaceholder} in the local path (${local}) so that each host gets its own file`
        }
        // `..` is a valid ssh_config alias, but as a path segment it takes the file out of its directory.
        const climbing = local.includes(Adhoc.hostPlaceholder)
          ? hosts.find((host) => host === "." || host === "..")
          : undefined
        return climbing === undefined
          ? undefined
          : `get: the host ${climbing} cannot fill ${Adhoc.hostPlaceholder} in a local path; give it another name`
      }
    })
  })).pipe(Command.withDescription("Download a file from every host (--sudo for files only root may read)."))

const runFlags = {
  mode: Flag.Literals("mode", ["parallel", "fibers", "serial"]).pipe(
    Flag.withDescription(
      "parallel: in worker processes (the default); fibers: in this process; serial: one by one"
    ),
    Flag.optional
  ),
  serial: Flag.Boolean("serial").pipe(
    Flag.withDescription("the same as --mode serial"),
    Flag.withDefault(false)
  ),
  workers: Flag.Int("workers").pipe(
    Flag.withDescription("how many worker processes share the runs (parallel mode)"),
    Flag.withMetavar("n"),
    Flag.optional
  )
} as const

const taskParams = (derived: TaskFlags | undefined) =>
  derived?._tag === "Json"
    ? [derived.param]
    : derived?._tag === "Struct"
    ? derived.flags.map((flag) => flag.param)
    : []

const makeRun = (loaded: LoadedTask | undefined) =>
  Command.make("run", {
    module: Argument.String("module").pipe(
      Argument.withDescription("the module that declares the task (a .ts or .js file)")
    ),
    task: Argument.String("task").pipe(Argument.withDescription("the task's name"), Argument.optional),
    ...runFlags,
    input: taskParams(loaded?._tag === "Loaded" ? loaded.flags : undefined)
  }, (input) =>
    Effect.gen(function*() {
      const shared = yield* base
      if (loaded === undefined || loaded._tag === "Failed") {
        return yield* new ExitCodes.UsageError({
          message: loaded?.message ?? "run: give a module and a task"
        })
      }
      if (loaded._tag === "Listed") {
        yield* Console.log(`tasks in ${input.module}: ${loaded.names.join(", ") || "(none)"}`)
        return yield* new ExitCodes.UsageError({ message: "run: give the name of a task" })
      }
      // The Schema checks the input before any host is touched.
      const value = yield* decodeInput(
        loaded.task,
        loaded.flags,
        input.input as ReadonlyArray<Option.Option<unknown>>
      )
      const mode = input.serial ? "serial" : Option.getOrElse(input.mode, () => "parallel" as const)
      yield* runOnHosts({
        task: loaded.task,
        input: value,
        shared,
        placement: {
          mode,
          poolSize: Option.getOrUndefined(shared.parallel),
          workers: Option.getOrUndefined(input.workers)
        },
        describe: `run task ${loaded.task.name} ${JSON.stringify(value ?? {})}`
      })
    })).pipe(
      Command.withDescription(
        loaded?._tag === "Loaded"
          ? `Run the task ${loaded.task.name} of ${loaded.module}; its input flags are listed below.`
          : "Run a task declared with Task.make in a module; `threadbare run MODULE TASK --help` lists its flags."
      )
    )

/** The whole command, with `run` built for the task the arguments name (if any). */
export const makeCommand = (loaded: LoadedTask | undefined) =>
  adhoc.pipe(
    Command.withDescription(description),
    Command.withExamples([
      {
        command: "threadbare -H web-1,web-2 -- uptime",
        description: "a command on two hosts, one after the other"
      },
      { command: "threadbare -H web-1,web-2 --parallel 2 --sudo -- systemctl restart app" },
      { command: "threadbare put ./app.conf /etc/app.conf -H web-1 --sudo" },
      { command: "threadbare get /var/log/app.log './logs/{host}.log' -H web-1,web-2" },
      { command: "threadbare run ./tasks.ts deploy --release 42 -H web-1,web-2 --batches 1,50%" }
    ]),
    Command.withSubcommands([put, get, makeRun(loaded)])
  )

/**
 * The names of the flags `run` takes before any of its task's, which a task's field may not
 * reuse, and those whose value is the next argument (not booleans), to find `run MODULE TASK`.
 */
const flagNames = (): { readonly reserved: ReadonlySet<string>; readonly withValue: ReadonlySet<string> } => {
  const reserved = new Set<string>(["help", "version", "completions", "log-level", "wizard", "h", "v"])
  const withValue = new Set<string>(["log-level", "completions"])
  const descriptor = Completions.fromCommand(makeCommand(undefined))
  const run = descriptor.subcommands.find((sub) => sub.name === "run")
  for (const flag of [...descriptor.flags, ...(run?.flags ?? [])]) {
    for (const name of [flag.name, ...flag.aliases]) {
      reserved.add(name)
      if (flag.type._tag !== "Boolean") withValue.add(name)
    }
  }
  return { reserved, withValue }
}

const failWith = (code: number, message?: string) =>
  Effect.as(message === undefined ? Effect.void : Console.error(`threadbare: ${message}`), code)

/**
 * Runs `threadbare` with the arguments of `Stdio` and returns its exit status (see
 * `exitCodes.ts`); never fails.
 */
export const main = (version: string) =>
  Effect.gen(function*() {
    const args = yield* (yield* Stdio.Stdio).args
    const names = flagNames()
    const found = scanRun(args, names.withValue)
    const loaded = found === undefined ? undefined : yield* loadTask(found, names.reserved)
    // The help of a task that could not be loaded lists none of its flags: say why.
    const beforeDashes = args.includes("--") ? args.slice(0, args.indexOf("--")) : args
    if (loaded?._tag === "Failed" && (beforeDashes.includes("--help") || beforeDashes.includes("-h"))) {
      yield* Console.error(`threadbare: ${loaded.message}`)
    }
    const command = makeCommand(loaded)
    return yield* Command.runWith(command, { version })(args).pipe(
      Effect.as(ExitCodes.ok),
      Effect.catch((error: unknown) => {
        if (error instanceof HostsFailed) return Effect.succeed(error.code)
        if (CliError.isCliError(error)) return Effect.succeed(ExitCodes.usage)
        const tag = (error as { readonly _tag?: unknown })._tag
        if (tag === "UsageError" || tag === "InputError") {
          return failWith(ExitCodes.usage, (error as { readonly message: string }).message)
        }
        return failWith(ExitCodes.other, String((error as { readonly message?: unknown }).message ?? error))
      })
    )
  }).pipe(
    // Standard output carries the hosts' lines (or NDJSON): the library's log lines go to stderr.
    Effect.provideService(Logger.LogToStderr, true)
  )
