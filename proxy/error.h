/* Error text for the proxy's functions: 0 or a negative errno, the why in a caller's buffer. */
#ifndef SP_ERROR_H
#define SP_ERROR_H

#define SP_ERROR_TEXT 512

struct sp_error {
    char text[SP_ERROR_TEXT];
};

/* Writes the message into err (when not NULL) and returns code. */
int sp_fail(struct sp_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
