/**
 * A minimal tar (ustar + pax) writer and a streaming reader, for directory transfers: a tree
 * travels as one stream instead of a round trip per file. Node has no tar of its own, and the
 * subset needed here (regular files, directories, symbolic links, long names) is small.
 *
 * The writer emits POSIX ustar headers, with a pax extended header (`x`) in front of an entry
 * whose name, link target or size does not fit ustar's fields. The reader understands what GNU
 * tar and BSD tar produce for such trees: ustar, pax (`x`, `g`) and GNU long names (`L`, `K`),
 * and hard links (`1`) to a file earlier in the archive.
 *
 * Names and link targets are byte strings: one character per byte (latin1), since a file name on
 * Linux is any bytes but `/` and NUL, not necessarily UTF-8. Decoded as UTF-8, `caf\xe9` would
 * come back renamed (`caf\ufffd`), and two names could become one. {@link nameBytes} turns one
 * into the bytes to give `fs` (which takes a `Buffer` as a path); {@link showName} into text for
 * a message.
 *
 * Why not a package: `bench/libraries.ts` measured tar-stream and modern-tar against this module.
 * Both take names as UTF-8 strings, so a non-UTF-8 name comes out renamed (only this module is
 * byte-exact against GNU tar both ways); tar-stream is 13 packages and 7 MiB; on a 256 MiB file
 * this module passes the content through without copying it (1.4 ms of framing against 17-21 ms).
 * On 1,000 small files modern-tar packs and extracts faster (1.3-1.6x, our header encoding is the
 * place to gain), which matters less here than names that arrive as they were.
 */
import { kindWords } from "./io.ts"

/** What a tar entry is. A `hardlink` names, as its `linkTarget`, a file earlier in the archive. */
export type EntryType = "file" | "directory" | "symlink" | "hardlink"

/**
 * One entry of an archive. `name` is relative, `/`-separated, without a trailing slash; it and
 * `linkTarget` are byte strings (one character per byte).
 */
export interface Entry {
  readonly name: string
  readonly type: EntryType
  /** Permission bits (`0o755`), including setuid/setgid/sticky. */
  readonly mode: number
  /** Bytes of content that follow the header (files only; 0 otherwise). */
  readonly size: number
  /** Modification time, seconds since the epoch. */
  readonly mtime: number
  /** The target of a symbolic link, or the name of the file a hard link shares. */
  readonly linkTarget?: string | undefined
}

/** The bytes of a byte-string name, for `fs` calls. */
export const nameBytes = (name: string): Buffer => Buffer.from(name, "latin1")

/** A byte string made from bytes (a name read with `encoding: "buffer"`). */
export const byteString = (bytes: Uint8Array): string => Buffer.from(bytes).toString("latin1")

/** A byte-string name as text for a message (bytes that are not UTF-8 show as U+FFFD). */
export const showName = (name: string): string => JSON.stringify(nameBytes(name).toString("utf8"))

export const BLOCK = 512

const encoder = new TextEncoder()

/** The two zero blocks that end an archive. */
export const endOfArchive = (): Uint8Array => new Uint8Array(BLOCK * 2)

/** Zero bytes that pad `size` bytes of content to a whole block. */
export const padding = (size: number): Uint8Array => new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK)

const writeString = (block: Uint8Array, offset: number, length: number, bytes: Uint8Array): void => {
  block.set(bytes.subarray(0, length), offset)
}

// Octal fields end with a NUL; a value too wide for the field goes into a pax record instead.
const writeOctal = (block: Uint8Array, offset: number, length: number, value: number): void => {
  writeString(block, offset, length - 1, encoder.encode(value.toString(8).padStart(length - 1, "0")))
}

const fitsOctal = (value: number, length: number): boolean => value < 8 ** (length - 1)

const typeFlag: Record<EntryType, string> = { file: "0", directory: "5", symlink: "2", hardlink: "1" }

const rawHeader = (fields: {
  readonly name: Uint8Array
  readonly mode: number
  readonly size: number
  readonly mtime: number
  readonly type: string
  readonly link: Uint8Array
}): Uint8Array => {
  const block = new Uint8Array(BLOCK)
  writeString(block, 0, 100, fields.name)
  writeOctal(block, 100, 8, fields.mode & 0o7777)
  writeOctal(block, 108, 8, 0) // uid and gid: the receiving side decides ownership
  writeOctal(block, 116, 8, 0)
  writeOctal(block, 124, 12, fitsOctal(fields.size, 12) ? fields.size : 0)
  writeOctal(block, 136, 12, fitsOctal(fields.mtime, 12) ? Math.max(0, Math.floor(fields.mtime)) : 0)
  block.fill(0x20, 148, 156) // the checksum is computed with its own field as spaces
  writeString(block, 156, 1, encoder.encode(fields.type))
  writeString(block, 157, 100, fields.link)
  writeString(block, 257, 6, encoder.encode("ustar\0"))
  writeString(block, 263, 2, encoder.encode("00"))
  let sum = 0
  for (const byte of block) sum += byte
  writeString(block, 148, 7, encoder.encode(sum.toString(8).padStart(6, "0") + "\0"))
  return block
}

// A record of byte strings: its length is in bytes, and counts its own digits.
const paxRecord = (key: string, value: string): string => {
  const body = ` ${key}=${value}\n`
  let length = body.length
  while (String(length).length + body.length !== length) length = String(length).length + body.length
  return `${length}${body}`
}

/**
 * The header blocks of one entry: a ustar header, preceded by a pax header when a name, link
 * target or size does not fit. Content and {@link padding} follow for files.
 */
export const header = (entry: Entry): Uint8Array => {
  const name = nameBytes(entry.type === "directory" ? `${entry.name}/` : entry.name)
  const link = nameBytes(entry.linkTarget ?? "")
  const records: Array<string> = []
  if (name.length > 100) {
    records.push(paxRecord("path", entry.type === "directory" ? `${entry.name}/` : entry.name))
  }
  if (link.length > 100) records.push(paxRecord("linkpath", entry.linkTarget ?? ""))
  if (!fitsOctal(entry.size, 12)) records.push(paxRecord("size", String(entry.size)))
  const main = rawHeader({
    name,
    mode: entry.mode,
    size: entry.size,
    mtime: entry.mtime,
    type: typeFlag[entry.type],
    link
  })
  if (records.length === 0) return main
  const pax = nameBytes(records.join(""))
  const paxHeader = rawHeader({
    name: encoder.encode("PaxHeader"),
    mode: 0o644,
    size: pax.length,
    mtime: entry.mtime,
    type: "x",
    link: new Uint8Array(0)
  })
  const out = new Uint8Array(BLOCK + pax.length + padding(pax.length).length + BLOCK)
  out.set(paxHeader, 0)
  out.set(pax, BLOCK)
  out.set(main, out.length - BLOCK)
  return out
}

// -- reading --------------------------------------------------------------------------------------

/**
 * What the reader finds, in order: an entry, its content in pieces, its end; finally `end`. An
 * entry of another type (a FIFO, a device) is `Skipped`: its name (a byte string) and what it is.
 */
export type ReadEvent =
  | { readonly _tag: "Entry"; readonly entry: Entry }
  | { readonly _tag: "Skipped"; readonly name: string; readonly kind: string }
  | { readonly _tag: "Data"; readonly bytes: Uint8Array }
  | { readonly _tag: "EntryEnd" }
  | { readonly _tag: "End" }

/** A malformed archive. */
export class TarFormatError {
  readonly _tag = "TarFormatError"
  readonly detail: string
  constructor(detail: string) {
    this.detail = detail
  }
}

const cString = (bytes: Uint8Array): string => {
  const nul = bytes.indexOf(0)
  return byteString(nul === -1 ? bytes : bytes.subarray(0, nul))
}

const readOctal = (bytes: Uint8Array): number => {
  // GNU tar writes sizes beyond the octal range in base-256, marked by the high bit.
  if (((bytes[0] ?? 0) & 0x80) !== 0) {
    let value = (bytes[0] ?? 0) & 0x7f
    for (let i = 1; i < bytes.length; i++) value = value * 256 + (bytes[i] ?? 0)
    return value
  }
  const text = cString(bytes).trim()
  return text === "" ? 0 : Number.parseInt(text, 8)
}

const parsePax = (bytes: Uint8Array): Map<string, string> => {
  // Records are "<length> <key>=<value>\n", the length in bytes and counting itself.
  const records = new Map<string, string>()
  let at = 0
  while (at < bytes.length) {
    const space = bytes.indexOf(0x20, at)
    if (space === -1) break
    const length = Number(byteString(bytes.subarray(at, space)))
    if (!Number.isInteger(length) || length <= 0) break
    const record = byteString(bytes.subarray(space + 1, at + length - 1))
    const eq = record.indexOf("=")
    if (eq !== -1) records.set(record.slice(0, eq), record.slice(eq + 1))
    at += length
  }
  return records
}

/** An entry type that is not transferred, in words. */
const otherType = (type: string): string =>
  type === "6"
    ? kindWords.fifo
    : type === "3"
    ? kindWords.character
    : type === "4"
    ? kindWords.block
    : `an entry of tar type ${JSON.stringify(type)}`

/**
 * Reads an archive pushed to it in chunks of any size, and says what it holds. Content is
 * handed out as it arrives, so a large file never has to fit in memory.
 */
export class TarReader {
  private buffer: Uint8Array = new Uint8Array(0)
  /** Bytes of the current entry's content still to come, then its padding. */
  private remaining = 0
  private pad = 0
  /** Content of a meta entry (pax or GNU long name) being collected. */
  private meta: { type: string; size: number; parts: Array<Uint8Array>; got: number } | undefined
  private pax = new Map<string, string>()
  private longName: string | undefined
  private longLink: string | undefined
  private ended = false

  get isEnded(): boolean {
    return this.ended
  }

  /** Feeds the next chunk; returns what it completes. */
  push(chunk: Uint8Array): Array<ReadEvent> | TarFormatError {
    const events: Array<ReadEvent> = []
    let input = chunk
    while (input.length > 0 && !this.ended) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, input.length)
        const piece = input.subarray(0, take)
        input = input.subarray(take)
        this.remaining -= take
        if (this.meta !== undefined) {
          if (this.meta.type !== "skip") this.meta.parts.push(piece.slice())
          this.meta.got += take
        } else {
          events.push({ _tag: "Data", bytes: piece })
        }
        if (this.remaining === 0) {
          if (this.meta !== undefined) this.finishMeta()
          else events.push({ _tag: "EntryEnd" })
        }
        continue
      }
      if (this.pad > 0) {
        const take = Math.min(this.pad, input.length)
        input = input.subarray(take)
        this.pad -= take
        continue
      }
      // A header: gather a whole block first.
      const need = BLOCK - this.buffer.length
      const joined = new Uint8Array(this.buffer.length + Math.min(need, input.length))
      joined.set(this.buffer, 0)
      joined.set(input.subarray(0, Math.min(need, input.length)), this.buffer.length)
      input = input.subarray(Math.min(need, input.length))
      if (joined.length < BLOCK) {
        this.buffer = joined
        continue
      }
      this.buffer = new Uint8Array(0)
      const result = this.readHeader(joined, events)
      if (result !== undefined) return result
    }
    return events
  }

  private finishMeta(): void {
    const meta = this.meta!
    this.meta = undefined
    const bytes = new Uint8Array(meta.got)
    let at = 0
    for (const part of meta.parts) {
      bytes.set(part, at)
      at += part.length
    }
    if (meta.type === "x") this.pax = parsePax(bytes)
    else if (meta.type === "L") this.longName = cString(bytes)
    else if (meta.type === "K") this.longLink = cString(bytes)
    // "g" (global pax) carries nothing this reader needs.
  }

  private readHeader(block: Uint8Array, events: Array<ReadEvent>): TarFormatError | undefined {
    if (block.every((b) => b === 0)) {
      // One zero block ends the archive for our purposes; a second one may follow.
      this.ended = true
      events.push({ _tag: "End" })
      return undefined
    }
    let sum = 0
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!
    if (sum !== readOctal(block.subarray(148, 156))) return new TarFormatError("a header's checksum is wrong")
    const type = String.fromCharCode(block[156] ?? 0x30)
    let size = readOctal(block.subarray(124, 136))
    if (type === "x" || type === "g" || type === "L" || type === "K") {
      this.meta = { type, size, parts: [], got: 0 }
      this.remaining = size
      this.pad = (BLOCK - (size % BLOCK)) % BLOCK
      if (size === 0) this.finishMeta()
      return undefined
    }
    const magic = cString(block.subarray(257, 263))
    const prefix = magic === "ustar" ? cString(block.subarray(345, 500)) : ""
    let name = cString(block.subarray(0, 100))
    if (prefix !== "") name = `${prefix}/${name}`
    let link = cString(block.subarray(157, 257))
    if (this.longName !== undefined) name = this.longName
    if (this.longLink !== undefined) link = this.longLink
    const paxPath = this.pax.get("path")
    const paxLink = this.pax.get("linkpath")
    const paxSize = this.pax.get("size")
    if (paxPath !== undefined) name = paxPath
    if (paxLink !== undefined) link = paxLink
    if (paxSize !== undefined) size = Number(paxSize)
    this.pax = new Map()
    this.longName = undefined
    this.longLink = undefined

    const entryType: EntryType | undefined = type === "0" || type === "\0" || type === "7"
      ? "file"
      : type === "5"
      ? "directory"
      : type === "2"
      ? "symlink"
      : type === "1"
      ? "hardlink"
      : undefined
    const clean = name.replace(/\/+$/, "").replace(/^\.\//, "")
    this.remaining = size
    this.pad = (BLOCK - (size % BLOCK)) % BLOCK
    if (clean === "" || clean.startsWith("/") || clean.split("/").includes("..")) {
      return new TarFormatError(`unsafe path in archive: ${showName(name)}`)
    }
    if (entryType === undefined) {
      // FIFOs, devices: not part of a tree we transfer, but said, never dropped in silence.
      events.push({ _tag: "Skipped", name: clean, kind: otherType(type) })
      this.meta = { type: "skip", size, parts: [], got: 0 }
      if (size === 0) this.meta = undefined
      return undefined
    }
    events.push({
      _tag: "Entry",
      entry: {
        name: clean,
        type: entryType,
        mode: readOctal(block.subarray(100, 108)) & 0o7777,
        size: entryType === "file" ? size : 0,
        mtime: readOctal(block.subarray(136, 148)),
        linkTarget: entryType === "symlink" || entryType === "hardlink" ? link : undefined
      }
    })
    // A hard link has no content of its own (a copy of the file's may follow; it is skipped).
    if (entryType === "hardlink" && size > 0) this.meta = { type: "skip", size, parts: [], got: 0 }
    else if (size === 0) events.push({ _tag: "EntryEnd" })
    return undefined
  }
}
