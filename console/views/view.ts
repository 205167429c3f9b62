import type { FleetApi } from '../api.js';
import type { StoredEvent } from '../live-feed.js';

/** What every view gets from the shell: the API with the session's token, and the page's parameters. */
export interface ViewContext {
  api: FleetApi;
  params: URLSearchParams;
}

/**
 * A rendered view: its element, and how it refetches what it shows after a live event (or, with
 * no event, after the live feed reconnected and may have missed some).
 */
export interface View {
  element: HTMLElement;
  title: string;
  refresh?(event?: StoredEvent): Promise<void>;
}
