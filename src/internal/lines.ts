/**
 * Cuts a byte stream into whole lines as it arrives, so that output can be printed line by line
 * while a command runs. Multi-byte characters split across chunks are decoded correctly.
 */
export class LineBuffer {
  private readonly decoder = new TextDecoder("utf-8")
  private pending = ""

  /** Adds a chunk and returns the lines it completed (without their terminators). */
  push(chunk: Uint8Array | string): ReadonlyArray<string> {
    this.pending += typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true })
    if (!this.pending.includes("\n")) return []
    const parts = this.pending.split("\n")
    this.pending = parts.pop() ?? ""
    return parts.map(stripCr)
  }

  /** Returns what is left after the last newline, if anything, once the stream has ended. */
  end(): ReadonlyArray<string> {
    this.pending += this.decoder.decode()
    const rest = this.pending
    this.pending = ""
    return rest === "" ? [] : [stripCr(rest)]
  }
}

// A pty ends lines with \r\n.
const stripCr = (line: string): string => line.endsWith("\r") ? line.slice(0, -1) : line
