/**
 * The local disk, in one adapter: the only module of `src/` that imports `node:fs`. Every
 * operation that touches a local file reaches it through here: the SSH layer (private keys,
 * `known_hosts`, `~/.ssh/config`), transfers (files, temporary files, directory trees packed and
 * unpacked as tar), the test layer (scripted downloads) and the NDJSON files of run events. None
 * of them asks for a service in its requirement type for it: the local disk is a fixed part of the
 * control machine, like the clock of the process, and a program cannot give another.
 * `Settings.lcd`, which only checks a directory, asks for Effect's `FileSystem` in its type, as
 * it always did.
 *
 * Failures are one neutral {@link LocalFileError} (the operation, the path, Node's `code`, its
 * message, and the Node error as `cause`); each domain maps it to its own error (transfers to
 * `TransferError` naming the local place, the SSH layer to `SettingsError`).
 *
 * Why Node's `fs` and not Effect's `FileSystem` (`NodeFileSystem`): transfers need positional
 * writes with many in flight into one file (`FileSystem.File` writes only at its cursor, one at a
 * time), reads into buffers of a reused pool, `O_NONBLOCK` opens so that the open of a FIFO never
 * waits for a writer (`FileSystem.open` takes only flag strings), names as bytes (a tree's names
 * need not be UTF-8; `readDirectory` gives strings), and synchronous calls for trees (below).
 *
 * Async or sync: a call that may block (an open that could meet a FIFO, a read or write of
 * content, a file read whole) runs in Node's thread pool, off the event loop, and is interruptible
 * where Node allows it. {@link Sync} holds synchronous calls for work made of thousands of
 * metadata calls and small reads (walking a tree, unpacking one): there each call takes a few
 * microseconds and a thread-pool round trip costs more than the call. Measured on a tree of 1,000
 * files of 4 KiB in 20 directories (`readdir`, `lstat`, open, `fstat`, read and close of every
 * file, median of 7, a 2-core machine at load 5): about 10 ms synchronously, 90 to 180 ms through
 * `fs.promises` one call at a time.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"

/** What `stat` says about a local file. */
export type Stats = fs.Stats

/** A local path, as text or as bytes (tree entries whose names need not be UTF-8). */
export type Path = string | Buffer

/** A local file-system call failed: which, on what path, and Node's error code and message. */
export class LocalFileError extends Data.TaggedError("LocalFileError")<{
  readonly operation: string
  /** `undefined` for a call on an open descriptor. */
  readonly path: string | undefined
  /** Node's code (`ENOENT`, `EACCES`...), `"UNKNOWN"` when it gave none. */
  readonly code: string
  readonly message: string
  readonly cause: unknown
}> {}

const shownPath = (path: Path | undefined): string | undefined =>
  path === undefined ? undefined : typeof path === "string" ? path : path.toString("utf8")

/** Turns what a Node call threw or passed to its callback into a {@link LocalFileError}. */
export const fromNode = (operation: string, path: Path | undefined, error: unknown): LocalFileError => {
  const e = error as { readonly code?: unknown; readonly message?: unknown }
  return new LocalFileError({
    operation,
    path: shownPath(path),
    code: typeof e?.code === "string" ? e.code : "UNKNOWN",
    message: String(e?.message ?? error),
    cause: error
  })
}

const missing = (error: unknown): boolean => {
  const code = (error as { readonly code?: unknown } | undefined)?.code
  return code === "ENOENT" || code === "ENOTDIR"
}

/** A promise-returning Node call, interruptible through its `AbortSignal` where it takes one. */
const promise = <A>(operation: string, path: Path | undefined, f: (signal: AbortSignal) => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (error) => fromNode(operation, path, error) })

/** Reads a whole file; interruptible. */
export const readFile = (path: string): Effect.Effect<Buffer, LocalFileError> =>
  promise("readFile", path, (signal) => fs.promises.readFile(path, { signal }))

/** Reads a whole file as UTF-8 text; interruptible. */
export const readFileString = (path: string): Effect.Effect<string, LocalFileError> =>
  promise("readFile", path, (signal) => fs.promises.readFile(path, { encoding: "utf8", signal }))

/** Writes a whole file, replacing it; interruptible. */
export const writeFile = (path: string, data: Uint8Array): Effect.Effect<void, LocalFileError> =>
  promise("writeFile", path, (signal) => fs.promises.writeFile(path, data, { signal }))

/** Creates a directory (and its missing parents with `recursive`). */
export const makeDirectory = (
  path: string,
  options: { readonly recursive?: boolean | undefined; readonly mode?: number | undefined } = {}
): Effect.Effect<void, LocalFileError> =>
  promise("mkdir", path, () =>
    fs.promises.mkdir(path, {
      recursive: options.recursive ?? false,
      ...(options.mode === undefined ? {} : { mode: options.mode })
    })).pipe(Effect.asVoid)

/**
 * `stat` (or `lstat` with `follow: false`) of a path, `undefined` when nothing is there (also
 * for a path below a file, `ENOTDIR`).
 */
export const stat = (
  path: string,
  options: { readonly follow?: boolean | undefined } = {}
): Effect.Effect<Stats | undefined, LocalFileError> => {
  const follow = options.follow ?? true
  return Effect.tryPromise({
    try: () =>
      (follow ? fs.promises.stat(path) : fs.promises.lstat(path)).catch((error: unknown) => {
        if (missing(error)) return undefined
        throw error
      }),
    catch: (error) => fromNode(follow ? "stat" : "lstat", path, error)
  })
}

/** Whether something is at `path` (a failure to look counts as no, as with `existsSync`). */
export const exists = (path: string): Effect.Effect<boolean> =>
  Effect.promise(() => fs.promises.access(path).then(() => true, () => false))

/**
 * Opens a file for reading without waiting: `O_NONBLOCK` makes the open of a FIFO return at once
 * (a plain open waits for a writer, inside a thread of the pool or, synchronously, with the whole
 * process). Interruptible: a descriptor that arrives after an interruption is closed.
 */
export const openReadNonBlocking = (path: string): Effect.Effect<number, LocalFileError> =>
  Effect.callback<number, LocalFileError>((resume) => {
    let abandoned = false
    fs.open(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, (error, fd) => {
      if (abandoned) {
        if (error === null) fs.close(fd, () => {})
        return
      }
      if (error !== null) resume(Effect.fail(fromNode("open", path, error)))
      else resume(Effect.succeed(fd))
    })
    return Effect.sync(() => {
      abandoned = true
    })
  })

/** `fstat` of an open descriptor; interruptible (a late answer is dropped). */
export const fstat = (fd: number): Effect.Effect<Stats, LocalFileError> =>
  Effect.callback<Stats, LocalFileError>((resume) => {
    let abandoned = false
    fs.fstat(fd, (error, info) => {
      if (abandoned) return
      if (error !== null) resume(Effect.fail(fromNode("fstat", undefined, error)))
      else resume(Effect.succeed(info))
    })
    return Effect.sync(() => {
      abandoned = true
    })
  })

/** Reads up to `length` bytes at `position` into `buffer` at `offset`: the count read, 0 at the end. */
export const read = (
  fd: number,
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number
): Effect.Effect<number, LocalFileError> =>
  Effect.callback<number, LocalFileError>((resume) => {
    fs.read(fd, buffer, offset, length, position, (error, bytesRead) => {
      if (error !== null) resume(Effect.fail(fromNode("read", undefined, error)))
      else resume(Effect.succeed(bytesRead))
    })
  })

/** Writes all of `bytes` at `position` (several writes when the system takes part of them). */
export const writeAll = (
  fd: number,
  bytes: Uint8Array,
  position: number
): Effect.Effect<void, LocalFileError> =>
  Effect.callback<void, LocalFileError>((resume) => {
    const step = (offset: number): void => {
      fs.write(fd, bytes, offset, bytes.length - offset, position + offset, (error, written) => {
        if (error !== null) return resume(Effect.fail(fromNode("write", undefined, error)))
        if (offset + written < bytes.length) return step(offset + written)
        resume(Effect.void)
      })
    }
    step(0)
  })

/**
 * Opens a file for appending, created with `mode` (less the umask) when missing. Interruptible:
 * a descriptor that arrives after an interruption is closed (an open of a FIFO waits for a
 * reader).
 */
export const openAppend = (path: string, mode: number): Effect.Effect<number, LocalFileError> =>
  Effect.callback<number, LocalFileError>((resume) => {
    let abandoned = false
    fs.open(path, "a", mode, (error, fd) => {
      if (abandoned) {
        if (error === null) fs.close(fd, () => {})
        return
      }
      if (error !== null) resume(Effect.fail(fromNode("open", path, error)))
      else resume(Effect.succeed(fd))
    })
    return Effect.sync(() => {
      abandoned = true
    })
  })

/**
 * Writes all of `bytes` at the end of a file opened with {@link openAppend}: straight to the
 * system, with no buffer in this process, so a crash after it loses none of them.
 */
export const append = (fd: number, bytes: Uint8Array): Effect.Effect<void, LocalFileError> =>
  Effect.callback<void, LocalFileError>((resume) => {
    const step = (offset: number): void => {
      fs.write(fd, bytes, offset, bytes.length - offset, null, (error, written) => {
        if (error !== null) return resume(Effect.fail(fromNode("write", undefined, error)))
        if (offset + written < bytes.length) return step(offset + written)
        resume(Effect.void)
      })
    }
    step(0)
  })

/** Closes a descriptor, at once (a close does not wait on a FIFO's other end). */
export const close = (fd: number): Effect.Effect<void> => Effect.sync(() => fs.closeSync(fd))

/**
 * Synchronous calls, each throwing Node's error (with its `code`), for work made of many tiny
 * calls in one step (walking a tree, unpacking a tar stream, a metadata call of a transfer), or
 * that must not be interleaved with other fibers (a check and an append to `known_hosts`): the
 * caller wraps the whole step in one `Effect.try` and maps what it throws, e.g. with
 * {@link fromNode}. Measured above: a thread-pool round trip per call would cost more than the
 * call. Nothing here may meet a FIFO without `O_NONBLOCK`, which would stop the whole process.
 */
export const Sync = {
  /** `stat`; throws when nothing is there. */
  stat: (path: Path): Stats => fs.statSync(path),
  /** `lstat`; throws when nothing is there. */
  lstat: (path: Path): Stats => fs.lstatSync(path),
  /** `stat` (`lstat` with `follow` false), `undefined` when nothing is there (also `ENOTDIR`). */
  statIfExists: (path: Path, follow = true): Stats | undefined =>
    (follow ? fs.statSync : fs.lstatSync)(path, { throwIfNoEntry: false }),
  exists: (path: Path): boolean => fs.existsSync(path),
  /** Throws unless this process may create files in the directory `path` (`EACCES`, `EPERM`, `EROFS`). */
  accessCreate: (path: Path): void => fs.accessSync(path, fs.constants.W_OK | fs.constants.X_OK),
  readFileString: (path: Path): string => fs.readFileSync(path, "utf8"),
  /** Appends to a file, created with `mode` when missing. */
  appendFile: (path: Path, data: string, mode: number): void => fs.appendFileSync(path, data, { mode }),
  /** Names in a directory, as bytes. */
  readdir: (dir: Path): Array<Buffer> => fs.readdirSync(dir, { encoding: "buffer" }),
  /** A symbolic link's target, as bytes. */
  readlink: (path: Path): Buffer => fs.readlinkSync(path, { encoding: "buffer" }),
  /** Opens for reading with `O_NONBLOCK`: a FIFO met here does not stop the process. */
  openReadNonBlocking: (path: Path): number =>
    fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
  /** Creates a new file for writing, never opening an existing one (`wx`). */
  openExclusive: (path: Path, mode: number): number => fs.openSync(path, "wx", mode),
  fstat: (fd: number): Stats => fs.fstatSync(fd),
  /** Reads at the descriptor's offset. */
  read: (fd: number, buffer: Uint8Array, offset: number, length: number): number =>
    fs.readSync(fd, buffer, offset, length, null),
  /** Writes all of `bytes` at the descriptor's offset. */
  writeAll: (fd: number, bytes: Uint8Array): void => {
    for (let offset = 0; offset < bytes.length;) offset += fs.writeSync(fd, bytes, offset)
  },
  close: (fd: number): void => fs.closeSync(fd),
  mkdir: (path: Path, options: { readonly recursive?: boolean; readonly mode?: number } = {}): void =>
    void fs.mkdirSync(path, options),
  symlink: (target: Path, path: Path): void => fs.symlinkSync(target, path),
  link: (existing: Path, path: Path): void => fs.linkSync(existing, path),
  chmod: (path: Path, mode: number): void => fs.chmodSync(path, mode),
  fchmod: (fd: number, mode: number): void => fs.fchmodSync(fd, mode),
  rename: (from: Path, to: Path): void => fs.renameSync(from, to),
  /** Removes a file, or a tree with `recursive`; nothing there is no error with `force`. */
  rm: (path: Path, options: { readonly recursive?: boolean; readonly force?: boolean } = {}): void =>
    fs.rmSync(path, options)
} as const
