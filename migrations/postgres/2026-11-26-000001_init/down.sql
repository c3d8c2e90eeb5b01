DROP TABLE file_uploads;
DROP TABLE messages;
DROP TABLE channel_members;
DROP TABLE channels;
DROP TABLE users;
