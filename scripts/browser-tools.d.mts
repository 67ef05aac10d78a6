/** Where Debian's chromium package puts the browser. */
export declare const CHROMIUM: string;
/** The Debian packages that provide it. */
export declare const BROWSER_PACKAGES: readonly string[];
/** Flags for a headless run on a machine without network. */
export declare const CHROMIUM_ARGS: readonly string[];
/** True when `chromium --version` runs. */
export declare function haveChromium(): boolean;
