/**
 * Local directory trees as tar streams: packing a tree for an upload, unpacking a downloaded one.
 *
 * The archive root is always named `t` when packing (the remote script moves `t` into place, so
 * the local directory's own name never reaches a command line), and `.` when unpacking what
 * `tar -c .` sent. File-system calls here are the local-files adapter's synchronous ones
 * (`Files.Sync`), wrapped by the caller in `Effect.try`: each takes microseconds, and a tree of many
 * small files is the common case (the adapter's header has the measure).
 *
 * Names inside a tree travel as bytes (`Buffer` paths, `readdir` with `encoding: "buffer"`, tar
 * names as byte strings), so a name that is not UTF-8 arrives as it was, never renamed.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { TransferError } from "../../Errors.ts"
import * as Files from "../local/files.ts"
import { kindOf, type Place, transferError } from "./io.ts"
import { localSync } from "./localFiles.ts"
import * as Tar from "./tar.ts"

interface PackEntry {
  readonly entry: Tar.Entry
  readonly header: Uint8Array
  /** The local file to read content from (files only), as bytes. */
  readonly source: Buffer
}

const slash = Buffer.from("/")

/** A path under `root` (text, as the caller gave it) for a byte-string `name`. */
const under = (root: string | Buffer, name: string): Buffer =>
  Buffer.concat([typeof root === "string" ? Buffer.from(root) : root, slash, Tar.nameBytes(name)])

const shown = (file: Buffer): string => JSON.stringify(file.toString("utf8"))

/** A local tree ready to stream as tar. */
export interface PackedTree {
  /** Bytes of the whole archive, known before sending (for progress and verification). */
  readonly size: number
  readonly files: number
  readonly blocks: Stream.Stream<Uint8Array, TransferError>
  /** Entries left out (FIFOs, sockets, devices): their local paths, and what each is. */
  readonly skipped: ReadonlyArray<Skipped>
}

/** An entry of a tree that is not transferred, and what it is in words ("a FIFO (named pipe)"). */
export interface Skipped {
  readonly path: string
  readonly kind: string
}

const entryOf = (name: string, info: Files.Stats, absolute: Buffer): Tar.Entry => {
  const mtime = Math.floor(info.mtimeMs / 1000)
  if (info.isDirectory()) return { name, type: "directory", mode: info.mode & 0o7777, size: 0, mtime }
  if (info.isSymbolicLink()) {
    const linkTarget = Tar.byteString(Files.Sync.readlink(absolute))
    return { name, type: "symlink", mode: 0o777, size: 0, mtime, linkTarget }
  }
  return { name, type: "file", mode: info.mode & 0o7777, size: info.size, mtime }
}

/**
 * Lists the tree under `root` (which must be a directory), parents before children. Names are
 * read as bytes: a name that is not UTF-8 would not survive a round trip through a JS string.
 * Files linked to each other go as separate copies. FIFOs, sockets and devices have no content
 * to send: they are only looked at (`lstat`, never opened) and listed in `skipped`.
 */
const walk = (root: string): { readonly entries: Array<PackEntry>; readonly skipped: Array<Skipped> } => {
  const out: Array<PackEntry> = []
  const skipped: Array<Skipped> = []
  const visit = (absolute: Buffer, name: string, info: Files.Stats): void => {
    const entry = entryOf(name, info, absolute)
    out.push({ entry, header: Tar.header(entry), source: absolute })
    if (!info.isDirectory()) return
    for (const child of Files.Sync.readdir(absolute).sort(Buffer.compare)) {
      const childPath = Buffer.concat([absolute, slash, child])
      const childInfo = Files.Sync.lstat(childPath)
      if (childInfo.isFile() || childInfo.isDirectory() || childInfo.isSymbolicLink()) {
        visit(childPath, `${name}/${Tar.byteString(child)}`, childInfo)
      } else {
        skipped.push({ path: childPath.toString("utf8"), kind: kindOf(childInfo) })
      }
    }
  }
  visit(Buffer.from(root), "t", Files.Sync.stat(root))
  return { entries: out, skipped }
}

const blockSize = 256 * 1024

/**
 * Packs the tree under `root` into a tar stream of blocks of about 256 KiB, read from disk only
 * as the consumer pulls, so memory stays bounded whatever the size of the tree.
 */
export const packTree = (place: Place, root: string): Effect.Effect<PackedTree, TransferError> =>
  Effect.map(localSync(place, () => walk(root)), ({ entries, skipped }) => {
    let size = Tar.endOfArchive().length
    for (const { entry, header } of entries) {
      size += header.length + entry.size + Tar.padding(entry.size).length
    }
    let index = 0
    let fd: number | undefined
    let left = 0
    let current: PackEntry | undefined
    const closeCurrent = (): void => {
      if (fd !== undefined) Files.Sync.close(fd)
      fd = undefined
    }
    // One pull: headers, content and padding, until the block is full or the archive ends.
    const pull = (): Uint8Array | undefined => {
      if (index > entries.length) return undefined
      const pieces: Array<Uint8Array> = []
      let filled = 0
      while (filled < blockSize) {
        if (current !== undefined && left > 0) {
          const buffer = Buffer.allocUnsafe(Math.min(left, blockSize - filled))
          const n = Files.Sync.read(fd!, buffer, 0, buffer.length)
          if (n === 0) {
            throw Object.assign(new Error(`${shown(current.source)} shrank while being sent`), {
              code: "ESHRANK"
            })
          }
          pieces.push(buffer.subarray(0, n))
          filled += n
          left -= n
          if (left === 0) {
            closeCurrent()
            const pad = Tar.padding(current.entry.size)
            pieces.push(pad)
            filled += pad.length
            current = undefined
          }
          continue
        }
        if (index === entries.length) {
          pieces.push(Tar.endOfArchive())
          index++
          break
        }
        const next = entries[index++]!
        pieces.push(next.header)
        filled += next.header.length
        if (next.entry.type === "file" && next.entry.size > 0) {
          current = next
          left = next.entry.size
          // Walked as a regular file, but it may have been replaced since: O_NONBLOCK keeps the
          // open of a FIFO from waiting for a writer, with the whole process.
          fd = Files.Sync.openReadNonBlocking(next.source)
          if (!Files.Sync.fstat(fd).isFile()) {
            throw Object.assign(new Error(`${shown(next.source)} is no longer a regular file`), {
              code: "ECHANGED"
            })
          }
        }
      }
      return Buffer.concat(pieces)
    }
    const blocks = Stream.unfold(
      undefined,
      () =>
        Effect.map(
          localSync(place, pull),
          (block) => (block === undefined ? undefined : [block, undefined] as const)
        )
    ).pipe(
      Stream.ensuring(Effect.sync(() => void (fd !== undefined && Files.Sync.close(fd))))
    )
    return { size, files: entries.filter((e) => e.entry.type === "file").length, blocks, skipped }
  })

/**
 * The permission bits a downloaded file or directory may keep: those of a single-file download.
 * Setuid, setgid and sticky bits and group or world write are dropped: a root deploy that fetches
 * a tree must not end up with a setuid binary (or a world-writable directory) whose content the
 * remote side controls.
 */
export const downloadModeMask = 0o755

/**
 * Writes the entries of a downloaded archive under `root` (created here), with modes masked by
 * {@link downloadModeMask}. Directory modes are applied at the end, deepest first, so that a
 * read-only directory does not stop its own content from being written. A hard link is made
 * again, to the file of the tree it names; one that names anything else (outside the tree, a
 * directory, a link, a file not seen yet) fails the transfer.
 */
export class TreeWriter {
  private reader = new Tar.TarReader()
  private fd: number | undefined
  private mode = 0
  private dirs: Array<readonly [Buffer, number]> = []
  private links = new Set<string>()
  /** The regular files written so far, by name: what a hard link may name. */
  private written = new Set<string>()
  files = 0
  /**
   * Entries of the archive that are not written: FIFOs and devices (`tar -c` stores them as a
   * header alone, never opening them), by their names in the tree (as text: bytes that are not
   * UTF-8 show as U+FFFD), and what each is.
   */
  readonly skipped: Array<{ readonly name: string; readonly kind: string }> = []
  readonly root: string

  constructor(root: string) {
    this.root = root
  }

  /** Creates the root; throws like `fs` does. */
  open(): void {
    Files.Sync.mkdir(this.root, { mode: 0o700 })
  }

  private target(name: string): Buffer {
    if (name === ".") return Buffer.from(this.root)
    // Nothing may be written through a link the archive itself made.
    const parts = name.split("/")
    for (let i = 1; i < parts.length; i++) {
      if (this.links.has(parts.slice(0, i).join("/"))) {
        throw Object.assign(new Error(`archive entry ${Tar.showName(name)} goes through a symbolic link`), {
          code: "EUNSAFE"
        })
      }
    }
    return under(this.root, name)
  }

  /** The file of the tree that a hard link entry `name` shares, checked. */
  private linkSource(name: string, linkTarget: string): Buffer {
    // Named like the entries (`./a`, or `a`), relative to the archive's root.
    const source = linkTarget.replace(/^(\.\/)+/, "").replace(/\/+$/, "")
    if (!this.written.has(source)) {
      throw Object.assign(
        new Error(
          `archive entry ${Tar.showName(name)} is a hard link to ${
            Tar.showName(linkTarget)
          }, which is not a file of the tree`
        ),
        { code: "EUNSAFE" }
      )
    }
    return this.target(source)
  }

  /** Feeds a chunk of the archive; throws on a malformed archive or a failed write. */
  push(chunk: Uint8Array): void {
    const events = this.reader.push(chunk)
    if (events instanceof Tar.TarFormatError) throw Object.assign(new Error(events.detail), { code: "ETAR" })
    for (const event of events) {
      switch (event._tag) {
        case "Entry": {
          const { entry } = event
          const at = this.target(entry.name)
          if (entry.type === "directory") {
            if (entry.name !== ".") Files.Sync.mkdir(at, { recursive: true, mode: 0o700 })
            this.dirs.push([at, entry.mode & downloadModeMask])
          } else if (entry.type === "symlink") {
            Files.Sync.symlink(Tar.nameBytes(entry.linkTarget ?? ""), at)
            this.links.add(entry.name)
          } else if (entry.type === "hardlink") {
            // Its mode is the file's, set when that was written.
            Files.Sync.link(this.linkSource(entry.name, entry.linkTarget ?? ""), at)
            this.files++
          } else {
            this.fd = Files.Sync.openExclusive(at, 0o600)
            this.mode = entry.mode & downloadModeMask
            this.written.add(entry.name)
            this.files++
          }
          break
        }
        case "Skipped":
          this.skipped.push({ name: Tar.nameBytes(event.name).toString("utf8"), kind: event.kind })
          break
        case "Data":
          if (this.fd !== undefined) Files.Sync.writeAll(this.fd, event.bytes)
          break
        case "EntryEnd":
          if (this.fd !== undefined) {
            Files.Sync.fchmod(this.fd, this.mode)
            Files.Sync.close(this.fd)
            this.fd = undefined
          }
          break
        case "End":
          break
      }
    }
  }

  /** Whether the archive's end marker was seen (a cut stream has none). */
  get complete(): boolean {
    return this.reader.isEnded
  }

  /**
   * Applies directory modes, but the root's: a user who is not root may move a directory to
   * another parent only while it can write in it, so the root gets its mode once in place
   * ({@link rootMode}). Throws like `fs` does.
   */
  finish(): void {
    const root = Buffer.from(this.root)
    for (const [dir, mode] of this.dirs.slice().reverse()) {
      if (dir.equals(root)) this.rootMode = mode
      else Files.Sync.chmod(dir, mode)
    }
  }

  /** The mode the root directory is to get once moved into place (after {@link finish}). */
  rootMode = 0o700

  /** Closes a file left open by a failed or cut transfer. */
  abandon(): void {
    if (this.fd !== undefined) Files.Sync.close(this.fd)
    this.fd = undefined
  }
}

/** Gives the owner write permission on `dir` and every directory under it, links not followed. */
const makeWritable = (dir: Buffer): void => {
  const info = Files.Sync.lstat(dir)
  if (!info.isDirectory()) return
  if ((info.mode & 0o200) === 0) Files.Sync.chmod(dir, (info.mode & 0o7777) | 0o200)
  for (const name of Files.Sync.readdir(dir)) {
    makeWritable(Buffer.concat([dir, slash, name]))
  }
}

/**
 * Removes a local tree, also one holding read-only directories (a downloaded `0555` tree, an old
 * one moved aside): their entries can be removed only once they are writable again. Never fails:
 * it is a cleanup, run when the outcome is decided.
 */
export const removeTree = (dir: string): Effect.Effect<void> =>
  Effect.try(() => Files.Sync.rm(dir, { recursive: true, force: true })).pipe(
    Effect.catch(() =>
      Effect.try(() => {
        if (Files.Sync.exists(dir)) makeWritable(Buffer.from(dir))
        Files.Sync.rm(dir, { recursive: true, force: true })
      })
    ),
    Effect.ignore
  )

/** Wraps a {@link TreeWriter} call for Effect, naming `place` in a failure. */
export const treeStep = <A>(place: Place, f: () => A): Effect.Effect<A, TransferError> =>
  localSync(place, f).pipe(
    Effect.mapError((error) =>
      error.detail.includes("archive") || error.detail.includes("checksum")
        ? transferError(place, "failed", `the directory stream is malformed: ${error.detail}`)
        : error
    )
  )
