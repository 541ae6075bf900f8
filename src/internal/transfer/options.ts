/**
 * The options of the transfers, declared once here for the machinery of this folder and
 * re-exported, with these docs, by the public `Transfer` module.
 */
import type * as Effect from "effect/Effect"
import type { Patch } from "../../Settings.ts"
import type * as Progress from "./progress.ts"

/**
 * In-memory content to upload: text (written as UTF-8) or bytes.
 *
 * @since 0.1.0
 */
export interface Content {
  readonly content: string | Uint8Array
}

/**
 * What `upload` sends: a local path (a file or a directory; relative to `lcd`), bytes, or
 * `{ content }`.
 *
 * @since 0.1.0
 */
export type Source = string | Uint8Array | Content

/**
 * Options shared by every transfer. Each wins over the setting of the same name for this call.
 *
 * @since 0.1.0
 */
export interface TransferOptions extends
  Pick<
    Patch,
    | "host"
    | "user"
    | "port"
    | "keyFile"
    | "gateway"
    | "useSudo"
    | "sudoUser"
    | "sudoPassword"
    | "overwrite"
    | "quiet"
  >
{
  /** Called a few times a second with the bytes moved so far, and once more at the end (`done`). */
  readonly onProgress?: ((progress: Progress.Progress) => Effect.Effect<void>) | undefined
  /**
   * Draw one progress line on the terminal for a large transfer (only when standard output is a
   * terminal, and never when `quiet`). Default: `true`.
   */
  readonly showProgress?: boolean | undefined
}

/**
 * Options of `upload`.
 *
 * @since 0.1.0
 */
export interface UploadOptions extends TransferOptions {
  /**
   * Permission bits of the uploaded file (`0o640`). Default: those of the file replaced, else
   * those of the local file, else `0o644`. For a directory, modes come from the local tree.
   */
  readonly mode?: number | undefined
  /** Owner to give the file or tree (`"www-data"`, `"app:app"`); needs `useSudo` unless it is you. */
  readonly owner?: string | undefined
}

/**
 * Options of `download`.
 *
 * @since 0.1.0
 */
export interface DownloadOptions extends TransferOptions {}

/**
 * Options of `rsyncUpload` and `rsyncDownload`.
 *
 * @since 0.1.0
 */
export interface RsyncOptions
  extends Pick<Patch, "host" | "user" | "port" | "keyFile" | "gateway" | "quiet">
{
  /** Delete files at the destination that the source does not have (`--delete`). Default: `false`. */
  readonly delete?: boolean | undefined
  /** Patterns to leave out (`--exclude`). */
  readonly exclude?: ReadonlyArray<string> | undefined
  /** More rsync options, passed as they are (`["--checksum"]`). Default: `["-a"]` is always given. */
  readonly options?: ReadonlyArray<string> | undefined
  /** Run the remote rsync through `sudo -n` (root-owned destinations and sources). Default: `false`. */
  readonly useSudo?: boolean | undefined
}
