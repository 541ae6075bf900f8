/**
 * Cuts a byte stream into whole lines as it arrives, so that output can be printed line by line
 * while a command runs, and keeps the exact text for the command's result. Multi-byte
 * characters split across chunks are decoded correctly.
 */
export class LineBuffer {
  // ignoreBOM: a U+FEFF at the start is part of the output, not a marker to drop.
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true })
  private readonly kept: Array<string> = []
  private pending = ""
  private readonly keep: boolean

  /** With `keep: false` (`discardOutput`), lines are still cut but no text is kept. */
  constructor(keep = true) {
    this.keep = keep
  }

  /** Adds a chunk and returns the lines it completed (without their terminators). */
  push(chunk: Uint8Array | string): ReadonlyArray<string> {
    const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true })
    if (this.keep && text !== "") this.kept.push(text)
    this.pending += text
    if (!this.pending.includes("\n")) return []
    const parts = this.pending.split("\n")
    this.pending = parts.pop() ?? ""
    return parts.map(stripCr)
  }

  /** Returns what is left after the last newline, if anything, once the stream has ended. */
  end(): ReadonlyArray<string> {
    const tail = this.decoder.decode()
    if (this.keep && tail !== "") this.kept.push(tail)
    const rest = this.pending + tail
    this.pending = ""
    return rest === "" ? [] : [stripCr(rest)]
  }

  /** Everything pushed so far, exactly as decoded (empty when not keeping). */
  text(): string {
    return this.kept.join("")
  }
}

// A pty ends lines with \r\n.
const stripCr = (line: string): string => line.endsWith("\r") ? line.slice(0, -1) : line
